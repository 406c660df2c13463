"""The method a run, validate or build request sends, from whichever source it uses: `files` (its tree), `bundle_b64`
(a zip of its folder), `dependencies` (address -> tree, beside `files`) and `resources` (files its steps read: joined
to the tree, or beside `mthds_contents` handed to the runtime as its submitted files), read into one `MethodTreeFiles`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fastapi import Request

from pipelex_server.api.body_guard import check_bundle_text, refuse_nul
from pipelex_server.api.protocol.method_ids import check_method_id, read_method_id
from pipelex_server.api.protocol.requests import read_files
from pipelex_server.engine.method_sources import (
    DEPENDENCIES_FIELD,
    RESOURCES_FIELD,
    add_dependency,
    check_request_total,
    decode_resources,
    dependency_address,
    join_resources,
    under_root,
)
from pipelex_server.engine.method_tree_files import MethodTreeFiles, object_member_documents, package_invalid, read_method_tree, shown
from pipelex_server.errors import ApiProblem

if TYPE_CHECKING:
    from pipelex_server.engine.runtime import Engine
    from pipelex_server.runs.model import Caller

BUNDLE_FIELD = "bundle_b64"
TOML_SUFFIXES = (".mthds", ".toml")
BUNDLE_B64_DESCRIPTION = (
    "The method as a zip archive of its folder, base64-encoded (in place of files); packages it ships under "
    ".mthds/methods/<name>/ are its dependencies. Limits: MAX_BUNDLE_FILES, MAX_BUNDLE_TOTAL_KIB."
)
RESOURCES_DESCRIPTION = (
    "Files the method's steps read (a PipeDocGen template_file): path -> standard base64. They join the tree sent in "
    "files or bundle_b64, or sit beside the mthds_contents bundles."
)
DEPENDENCIES_DESCRIPTION = "The packages the method depends on: address -> its tree (a map of file entries, as files)."


def _invalid(field: str, detail: str) -> ApiProblem:
    return ApiProblem(status=422, code="request.invalid", detail=detail, params={"field": field}, location={"path": ["body", field]})


def check_one_source(body: Any) -> None:
    """A method is sent one way: as `method_ref`, `files`, `bundle_b64` or `mthds_contents`; `dependencies` go beside
    `files`; a `method_id` names a stored method (api/protocol/method_ids.py)."""
    check_method_id(body)
    if getattr(body, "method_ref", None) is not None:
        for name in ("files", BUNDLE_FIELD, "mthds_contents", DEPENDENCIES_FIELD, RESOURCES_FIELD):
            if getattr(body, name, None) is not None:
                raise _invalid(
                    "method_ref", f"Send the method one way: a method_ref names a published package, so {name} cannot go with it."
                )
    files, bundle = getattr(body, "files", None), getattr(body, "bundle_b64", None)
    mthds_contents, dependencies = getattr(body, "mthds_contents", None), getattr(body, "dependencies", None)
    if files is not None and bundle is not None:
        raise _invalid(BUNDLE_FIELD, "Send the method either as files (its tree) or as bundle_b64 (a zip of it), not both.")
    if mthds_contents is not None and (files is not None or bundle is not None):
        field = "files" if files is not None else BUNDLE_FIELD
        raise _invalid(field, f"Send the method either as {field} or as mthds_contents, not both.")
    if dependencies and files is None:
        raise _invalid(
            DEPENDENCIES_FIELD,
            "`dependencies` accompany the method's own `files`: send the method's tree in `files`, and its dependencies beside "
            "it (a bundle_b64 archive ships its packages under .mthds/methods/).",
        )


def _check_toml(tree: MethodTreeFiles | dict[str, bytes], field: str) -> None:
    """The files a TOML parser reads are held to the same text guards as inline bundles, naming the file."""
    contents = tree.contents if isinstance(tree, MethodTreeFiles) else tree
    for path, data in contents.items():
        if not path.endswith(TOML_SUFFIXES):
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # the runtime refuses it as it loads, naming the file
        where = ["body", field, shown(path)]
        refuse_nul(text, where)
        check_bundle_text(text, where)


def _dependencies_documents(body: bytes) -> dict[str, str]:
    """Each dependency's map as JSON text, read from the body's own text (a key given twice is seen)."""
    try:
        members = object_member_documents(body, DEPENDENCIES_FIELD) or []
    except ValueError as exc:
        raise _invalid(DEPENDENCIES_FIELD, "`dependencies` must map each dependency's address to its map of file entries.") from exc
    documents: dict[str, str] = {}
    for address, document in members:
        if address in documents:
            raise _invalid(DEPENDENCIES_FIELD, f"`dependencies` gives the address {shown(address)!r} twice.")
        documents[address] = document
    return documents


async def _read_dependencies(request: Request, engine: Engine, caller: Caller, tree: MethodTreeFiles) -> MethodTreeFiles:
    documents = _dependencies_documents(await request.body())
    limits = engine.source_limits
    if len(documents) > limits.max_dependencies:
        raise package_invalid(
            f"`dependencies` sends {len(documents)} trees, past this server's limit of {limits.max_dependencies} "
            "(MAX_METHOD_DEPENDENCIES).",
            reason="too_many_dependencies",
            limit=limits.max_dependencies,
            field=DEPENDENCIES_FIELD,
        )
    dependencies = dict(tree.dependencies)
    for address, document in documents.items():
        label = f"The dependency {shown(address)!r}"
        root = f"{address}/"
        try:
            package = await read_method_tree(
                document, blobs=engine.blobs, scope=caller.scope, limits=engine.tree_limits, field=DEPENDENCIES_FIELD, label=label
            )
        except ApiProblem as problem:
            raise under_root(problem, root) from problem.__cause__
        _check_toml(package, DEPENDENCIES_FIELD)
        declared = dependency_address(package, fallback_name=address.rsplit("/", 1)[-1], field=DEPENDENCIES_FIELD, root=root)
        if declared != address:
            raise ApiProblem(
                status=422,
                code="pipelex.request.dependency_key_mismatch",
                detail=f"{label} is keyed by an address its METHODS.toml does not declare: it declares {shown(declared)!r}.",
                params={"field": DEPENDENCIES_FIELD, "key": shown(address), "address": shown(declared)},
                location={"path": ["body", DEPENDENCIES_FIELD, shown(address)]},
            )
        add_dependency(dependencies, address, package, field=DEPENDENCIES_FIELD, root=root)
    return replace(tree, dependencies=dependencies)


def _bundles_tree(mthds_contents: list[str], resources: dict[str, bytes] | None) -> MethodTreeFiles:
    """Inline bundles and the files sent beside them as one tree, every bundle at its root (how the runtime reads
    submitted files): what a validation of them checks."""
    contents = {f"bundle_{index}.mthds": text.encode("utf-8") for index, text in enumerate(mthds_contents)}
    for path, data in (resources or {}).items():
        if path in contents:
            raise ApiProblem(
                status=422,
                code="request.invalid",
                detail=f"The file {shown(path)!r} sent in `resources` takes a name this server gives an inline bundle.",
                params={"field": RESOURCES_FIELD, "path": shown(path)},
                location={"path": ["body", RESOURCES_FIELD, shown(path)]},
            )
        contents[path] = data
    return _submitted_tree(contents)


def _submitted_tree(contents: dict[str, bytes]) -> MethodTreeFiles:
    try:
        return MethodTreeFiles.of(contents)
    except Exception as exc:  # a path the runtime takes as a submitted file but no tree can hold (a dot segment)
        raise _invalid(RESOURCES_FIELD, f"The files sent in `resources` cannot be held as a method's files: {exc}.") from exc


async def read_source(request: Request, engine: Engine, caller: Caller, body: Any, *, validating: bool = False) -> MethodTreeFiles | None:
    """The method tree a body sends (None for inline bundles alone). Beside `mthds_contents`, the files `resources`
    sends ride as a tree too (the runtime's submitted files); a validation reads bundles and files as one tree.
    Raises 4xx problems naming the field, file or member."""
    check_one_source(body)
    files, bundle = getattr(body, "files", None), getattr(body, "bundle_b64", None)
    mthds_contents = getattr(body, "mthds_contents", None)
    resources = decode_resources(getattr(body, "resources", None), engine.source_limits)
    if resources:
        _check_toml(resources, RESOURCES_FIELD)
    tree: MethodTreeFiles | None
    field = "files"
    if bundle is not None:
        field = BUNDLE_FIELD
        tree = await engine.read_bundle(bundle, scope=caller.scope)
        _check_toml(tree, BUNDLE_FIELD)
    else:
        tree = await read_files(request, engine, caller, files)
    tree = await read_method_id(request, caller, body, tree)
    if tree is not None and getattr(body, "dependencies", None):
        tree = await _read_dependencies(request, engine, caller, tree)
    if tree is not None:
        tree = join_resources(tree, resources, engine.tree_limits)
        check_request_total(tree, engine.source_limits, field=field)
        return tree
    if resources is None:
        return None
    if not mthds_contents:
        raise _invalid(RESOURCES_FIELD, "`resources` accompany a method: send it as files, bundle_b64 or mthds_contents.")
    return _bundles_tree(mthds_contents, resources) if validating else _submitted_tree(resources)


def source_present(body: Any) -> bool:
    return any(getattr(body, name, None) is not None for name in ("files", "bundle_b64", "method_ref", "method_id"))
