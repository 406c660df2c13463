"""`method_id` on the run and validate routes: a catalog selector (`mt_x` = the latest published version, `mt_x@3`,
`mt_x@draft`) read into the method tree it names, which then runs through the same tree path as `files`. A bare id
beside `files` runs the tree sent and records the method. The tree carries the method's id and version, which the run
records (`method_id`, `method_version`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request

from pipelex_server.catalog.ids import parse_selector
from pipelex_server.engine.method_tree_files import MethodTreeFiles
from pipelex_server.errors import ApiProblem

if TYPE_CHECKING:
    from pipelex_server.runs.model import Caller

FIELD = "method_id"
_EXCLUSIVE = ("method_ref", "bundle_b64", "mthds_contents", "dependencies", "resources")


@dataclass(frozen=True)
class CatalogTreeFiles(MethodTreeFiles):
    """A method tree a catalog selector named, with the method's bare id and the version the run records."""

    method_id: str = ""
    method_version: str | None = None


def _invalid(detail: str) -> ApiProblem:
    return ApiProblem(status=422, code="request.invalid", detail=detail, params={"field": FIELD}, location={"path": ["body", FIELD]})


def check_method_id(body: Any) -> None:
    """`method_id` names the method: nothing else may, except the tree itself beside a bare id."""
    selector = getattr(body, FIELD, None)
    if selector is None:
        return
    if not isinstance(selector, str):  # a route whose body takes it as an extension (the tool routes)
        raise _invalid("method_id must be a method selector: mt_…, mt_…@<n> or mt_…@draft.")
    for name in _EXCLUSIVE:
        if getattr(body, name, None) is not None:
            raise _invalid(f"Send the method one way: a method_id names a stored method, so {name} cannot go with it.")
    if getattr(body, "files", None) is not None and "@" in selector:
        raise _invalid("Beside files, method_id must be the bare id (mt_…): the tree sent is what runs.")


async def read_method_id(request: Request, caller: Caller, body: Any, tree: MethodTreeFiles | None) -> MethodTreeFiles | None:
    """The tree a body's `method_id` names (or ``tree``, the one it sent beside a bare id, marked with the method);
    ``tree`` unchanged when the body names no method. 404/409 problems as the catalog answers them."""
    selector = getattr(body, FIELD, None)
    if selector is None:
        return tree
    parsed = parse_selector(selector, field=FIELD)
    catalog = request.app.state.services.catalog
    if tree is not None:
        await catalog.methods.check_exists(caller, parsed.method_id)
        return CatalogTreeFiles(contents=tree.contents, digest=tree.digest, hashes=tree.hashes, method_id=parsed.method_id)
    resolved = await catalog.methods.resolve(caller, parsed)
    found = resolved.tree
    return CatalogTreeFiles(
        contents=found.contents, digest=found.digest, hashes=found.hashes, method_id=resolved.method_id, method_version=resolved.version
    )


def method_fields(tree: MethodTreeFiles | None) -> dict[str, Any]:
    """The `RunRequest` fields recording the catalog method a run ran (none for another source)."""
    if not isinstance(tree, CatalogTreeFiles):
        return {}
    return {"method_id": tree.method_id, "method_version": tree.method_version}
