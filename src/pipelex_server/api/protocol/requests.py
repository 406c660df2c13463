"""Protocol run and validate requests: their bodies, and their parsing into the run service's `RunRequest`.

The official clients (`mthds`'s `MthdsAPIClient`, `pipelex-sdk`'s `PipelexAPIClient`) send a method as `files`
(tree path -> file entry: text, `{"base64": ...}` or `{"sha256": ..., "size": ...}`), its whole tree, any file type;
it is read by the standard's reader (`engine/method_tree_files.py`). The seed routes take `files` too.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from pipelex_server.api.body_guard import GuardedBody, check_bundle_text, refuse_nul
from pipelex_server.api.protocol.method_ids import method_fields
from pipelex_server.api.schemas import FILES_DESCRIPTION, MAX_CALLBACK_URLS, RUN_ID_PATTERN, MethodSourceFields
from pipelex_server.engine.method_bundle import VENDORED_METHODS_PREFIX
from pipelex_server.engine.method_sources import add_dependency, check_request_total, dependency_address, under_root
from pipelex_server.engine.method_tree_files import MethodTreeFiles, check_manifest, files_document, shown
from pipelex_server.errors import ApiProblem
from pipelex_server.runs.model import Caller, RunRequest

if TYPE_CHECKING:
    from pipelex_server.engine.runtime import Engine

TOML_SUFFIXES = (".mthds", ".toml")  # files TOML parsers read: their nesting is bounded like inline bundles
MAX_BUNDLE_FILES = 64
MAX_BUNDLE_CHARS = 4 * 1024 * 1024
METHOD_REF_FIELD = "method_ref"


class ProtocolRunRequest(GuardedBody, MethodSourceFields):
    """Body of POST /v1/execute and /v1/start: the protocol's run arguments, plus our extensions."""

    model_config = ConfigDict(extra="allow")  # unknown extensions (method_id, ...) are refused by name

    pipe_code: str | None = Field(default=None, min_length=1, max_length=512)
    files: dict[str, Any] | None = Field(default=None, description=FILES_DESCRIPTION)
    inputs: dict[str, Any] | None = None
    output_name: str | None = Field(default=None, max_length=256)
    output_multiplicity: bool | int | None = None
    dynamic_output_concept_ref: str | None = Field(default=None, max_length=512)
    # extensions (the same meaning as on /api/v1/pipeline/*)
    mthds_contents: list[Annotated[str, Field(max_length=MAX_BUNDLE_CHARS)]] | None = Field(default=None, max_length=MAX_BUNDLE_FILES)
    dry_run: bool = False
    callback_urls: list[Annotated[str, Field(min_length=1, max_length=2048)]] | None = Field(default=None, max_length=MAX_CALLBACK_URLS)
    pipeline_run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)


class ProtocolValidateRequest(GuardedBody, MethodSourceFields):
    """Body of POST /v1/validate. `render` and `views` are hints: unknown tokens are ignored."""

    model_config = ConfigDict(extra="allow")

    files: dict[str, Any] | None = Field(default=None, description=FILES_DESCRIPTION)
    allow_signatures: bool = False  # the runtime's verdict is the same either way (signatures never invalidate)
    render: list[str] | None = None
    views: list[str] | None = None
    pipe_code: str | None = Field(default=None, min_length=1, max_length=512)
    mthds_contents: list[Annotated[str, Field(max_length=MAX_BUNDLE_CHARS)]] | None = Field(default=None, max_length=MAX_BUNDLE_FILES)


UNSUPPORTED_SELECTORS: tuple[str, ...] = ()  # method_id is served (api/protocol/method_ids.py)


def refuse_unknown_extensions(body: BaseModel, *, ignored: tuple[str, ...] = ()) -> None:
    for name in body.model_extra or {}:
        if name in ignored and name not in UNSUPPORTED_SELECTORS:
            continue
        raise _unsupported(name, "not_supported", f"This server does not accept the request field '{name}'.")


def _unsupported(field: str, reason: str, detail: str, **params: Any) -> ApiProblem:
    return ApiProblem(
        status=422,
        code="request.unsupported",
        detail=detail,
        params={"field": field, "reason": reason, **params},
        location={"path": ["body", field]},
    )


def check_sources(files: dict[str, Any] | None, mthds_contents: list[str] | None) -> None:
    """A method is sent one way: as `files` (a method tree) or as `mthds_contents`, never both."""
    if files is not None and mthds_contents is not None:
        raise ApiProblem(
            status=422,
            code="request.invalid",
            detail="Send the method either as files (its tree) or as mthds_contents, not both.",
            params={"field": "files"},
            location={"path": ["body", "files"]},
        )


async def read_files(request: Request, engine: Engine, caller: Caller, files: dict[str, Any] | None) -> MethodTreeFiles | None:
    """The method tree a body's `files` map sends, read from the body's own JSON text (so a key given twice is seen)
    by the standard's reader; None when the body sends no `files`. Raises 4xx problems naming the file or field."""
    if files is None:
        return await read_method_ref(request, engine)
    document = files_document(await request.body())
    if document is None:
        raise ApiProblem(status=422, code="request.invalid", detail="files must be a JSON object.", params={"field": "files"})
    tree = await engine.read_method_tree(document, scope=caller.scope)
    for path, data in tree.contents.items():
        if not path.endswith(TOML_SUFFIXES):
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # the runtime refuses it as it loads, naming the file
        where = ["body", "files", shown(path)]
        refuse_nul(text, where)
        check_bundle_text(text, where)
    return tree


@dataclass(frozen=True)
class FetchedTreeFiles(MethodTreeFiles):
    """A method tree fetched by `method_ref`, with where it came from (the run records it and the answer shows it)."""

    provenance: dict[str, Any] = field(default_factory=dict)


def _method_ref_of(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    value = parsed.get("method_ref") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None


def _check_fetched(contents: dict[str, bytes], *, root: str = "") -> None:
    """A fetched tree's manifest is valid and the files a TOML parser reads are held to the inline bundles' text guards,
    each refusal naming the file by its path in the package (``root`` + its tree path)."""
    try:
        check_manifest(contents, METHOD_REF_FIELD)
    except ApiProblem as problem:
        raise (under_root(problem, root) if root else problem) from problem.__cause__
    for path, data in contents.items():
        if path.endswith(TOML_SUFFIXES):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            refuse_nul(text, ["body", METHOD_REF_FIELD, shown(root + path)])
            check_bundle_text(text, ["body", METHOD_REF_FIELD, shown(root + path)])


async def read_method_ref(request: Request, engine: Engine) -> MethodTreeFiles | None:
    """The package a body's `method_ref` names, fetched with git (methods/), as a method tree; None without one. Each
    package it ships under `.mthds/methods/<name>/` is a dependency tree keyed by the address its manifest declares,
    under the request limits, as a `bundle_b64` archive's are."""
    method_ref = _method_ref_of(await request.body())
    if method_ref is None:
        return None
    fetched = await request.app.state.services.methods.fetch(method_ref)
    _check_fetched(fetched.contents)
    dependencies: dict[str, MethodTreeFiles] = {}
    for name, contents in fetched.packages.items():
        root = f"{VENDORED_METHODS_PREFIX}{name}/"
        _check_fetched(contents, root=root)
        package = MethodTreeFiles.of(contents)
        address = dependency_address(package, fallback_name=name, field=METHOD_REF_FIELD, root=root)
        add_dependency(dependencies, address, package, field=METHOD_REF_FIELD, root=root)
    tree = MethodTreeFiles.of(fetched.contents)
    # the provenance's tree_digest is the package's own tree's, as the official server records it: the commit pins
    # the shipped packages, and the stored request names each dependency tree's files by hash
    method = FetchedTreeFiles(
        contents=tree.contents, digest=tree.digest, hashes=tree.hashes, dependencies=dependencies, provenance=dict(fetched.provenance)
    )
    check_request_total(method, engine.source_limits, field=METHOD_REF_FIELD)
    return method


def method_provenance(tree: MethodTreeFiles | None) -> dict[str, Any] | None:
    return tree.provenance if isinstance(tree, FetchedTreeFiles) else None


def tree_fields(tree: MethodTreeFiles | None) -> dict[str, Any]:
    """The `RunRequest` fields of a method tree (none when the request sends none)."""
    if tree is None:
        return {}
    return {
        "tree": tree.hashes,
        "tree_digest": tree.digest,
        "tree_dependencies": tree.dependency_hashes(),
        "tree_files": tree,
        "method_provenance": method_provenance(tree),
        **method_fields(tree),
    }


def to_run_request(body: ProtocolRunRequest, tree: MethodTreeFiles | None) -> RunRequest:
    if not body.pipe_code and not body.mthds_contents and tree is None:
        # as the official server answers it: the request's field pipe_code, which nothing else can stand in for here
        raise ApiProblem(
            status=422,
            code="request.invalid",
            detail="The request names no method to run: give pipe_code, files or mthds_contents.",
            params={"field": "pipe_code"},
        )
    return RunRequest(
        pipe_code=body.pipe_code,
        mthds_contents=body.mthds_contents,
        inputs=body.inputs,
        output_name=body.output_name,
        output_multiplicity=body.output_multiplicity,
        dynamic_output_concept_ref=body.dynamic_output_concept_ref,
        dry_run=body.dry_run,
        callback_urls=list(body.callback_urls or []),
        **tree_fields(tree),
    )


def run_id_for(body: ProtocolRunRequest, idempotency_key: str | None) -> str | None:
    """The run id a start or execute asks for. The SDK allows keys of 1-255 visible ASCII characters; a key that
    is not a valid run id is hashed into one, so the same key always names the same run."""
    if idempotency_key is None:
        return body.pipeline_run_id
    run_id = (
        idempotency_key if re.fullmatch(RUN_ID_PATTERN, idempotency_key) else "key-" + hashlib.sha256(idempotency_key.encode()).hexdigest()
    )
    if body.pipeline_run_id and body.pipeline_run_id != run_id:
        raise ApiProblem(
            status=422, code="request.invalid", detail="pipeline_run_id and Idempotency-Key differ.", params={"field": "pipeline_run_id"}
        )
    return run_id
