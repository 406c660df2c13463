"""Protocol run and validate requests: their bodies, and their parsing into the run service's `RunRequest`.

The official clients (`mthds`'s `MthdsAPIClient`, `pipelex-sdk`'s `PipelexAPIClient`) send a method as `files`
(tree path -> file entry); only inline `.mthds` files are accepted.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

from mthds.method_tree.file_entry import Base64FileEntry, FileEntry, HashFileEntry
from mthds.method_tree.tree_path import tree_path_violation
from pydantic import BaseModel, ConfigDict, Field

from pipelex_server.api.body_guard import GuardedBody, check_bundle_text, refuse_nul
from pipelex_server.api.schemas import MAX_CALLBACK_URLS, RUN_ID_PATTERN
from pipelex_server.errors import ApiProblem
from pipelex_server.runs.model import RunRequest

BUNDLE_SUFFIX = ".mthds"
MAX_BUNDLE_FILES = 64
MAX_BUNDLE_CHARS = 4 * 1024 * 1024


class ProtocolRunRequest(GuardedBody):
    """Body of POST /v1/execute and /v1/start: the protocol's run arguments, plus our extensions."""

    model_config = ConfigDict(extra="allow")  # unknown extensions (method_ref, method_id, ...) are refused by name

    pipe_code: str | None = Field(default=None, min_length=1, max_length=512)
    files: dict[str, FileEntry] | None = Field(default=None, description="The method: tree path -> file entry (only .mthds files).")
    inputs: dict[str, Any] | None = None
    output_name: str | None = Field(default=None, max_length=256)
    output_multiplicity: bool | int | None = None
    dynamic_output_concept_ref: str | None = Field(default=None, max_length=512)
    # extensions (the same meaning as on /api/v1/pipeline/*)
    mthds_contents: list[Annotated[str, Field(max_length=MAX_BUNDLE_CHARS)]] | None = Field(default=None, max_length=MAX_BUNDLE_FILES)
    dry_run: bool = False
    callback_urls: list[Annotated[str, Field(min_length=1, max_length=2048)]] | None = Field(default=None, max_length=MAX_CALLBACK_URLS)
    pipeline_run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)


class ProtocolValidateRequest(GuardedBody):
    """Body of POST /v1/validate. `render` and `views` are hints: unknown tokens are ignored."""

    model_config = ConfigDict(extra="allow")

    files: dict[str, FileEntry] | None = None
    allow_signatures: bool = False  # the runtime's verdict is the same either way (signatures never invalidate)
    render: list[str] | None = None
    views: list[str] | None = None
    pipe_code: str | None = Field(default=None, min_length=1, max_length=512)
    mthds_contents: list[Annotated[str, Field(max_length=MAX_BUNDLE_CHARS)]] | None = Field(default=None, max_length=MAX_BUNDLE_FILES)


UNSUPPORTED_SELECTORS = ("method_ref", "method_id")


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


def bundle_contents(files: dict[str, Any] | None, mthds_contents: list[str] | None) -> list[str] | None:
    """The bundle texts a `files` map carries, in tree path order. Only inline `.mthds` files are accepted."""
    if files is None:
        return mthds_contents
    if mthds_contents is not None:
        raise _unsupported("files", "two_sources", "Send the method either as files or as mthds_contents, not both.")
    if not files:
        raise _unsupported("files", "empty", "files holds no file: send at least one .mthds file.")
    if len(files) > MAX_BUNDLE_FILES:
        raise _unsupported("files", "too_many_files", f"files holds {len(files)} files; at most {MAX_BUNDLE_FILES} are accepted.")
    missing = [entry.sha256 for entry in files.values() if isinstance(entry, HashFileEntry)]
    if missing:
        raise ApiProblem(
            status=422,
            code="request.blobs_missing",
            detail='This server keeps no blob store: send every file inline (its text, or {"base64": ...}), not by hash.',
            params={"missing_blobs": sorted(set(missing))},
        )
    contents = []
    for path in sorted(files):
        shown = path if len(path) <= 200 else path[:200] + "..."  # a name is echoed back: keep it short
        violation = tree_path_violation(path)
        if violation is not None:
            raise _unsupported("files", "invalid_path", f"The file name {shown!r} is not a tree path: {violation}.", file=shown)
        if not path.endswith(BUNDLE_SUFFIX):
            detail = f"The file {shown!r} is not a .mthds bundle; only .mthds files are accepted."
            raise _unsupported("files", "not_mthds", detail, file=shown)
        entry = files[path]
        text = _entry_text(shown, entry)
        if len(text) > MAX_BUNDLE_CHARS:
            raise _unsupported("files", "too_large", f"The file {shown!r} is larger than {MAX_BUNDLE_CHARS} characters.", file=shown)
        if not isinstance(entry, str):  # decoded here: the body guard has not seen this text
            refuse_nul(text, ["body", "files", shown])
        check_bundle_text(text, ["body", "files", shown])
        contents.append(text)
    return contents


def _entry_text(path: str, entry: str | Base64FileEntry) -> str:
    if isinstance(entry, str):
        return entry
    try:
        return entry.data.decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _unsupported("files", "not_utf8", f"The file {path!r} is not UTF-8 text.", file=path) from exc


def to_run_request(body: ProtocolRunRequest, contents: list[str] | None) -> RunRequest:
    if not body.pipe_code and not contents:
        raise ApiProblem(status=422, code="request.pipe_unspecified", detail="Give at least one of pipe_code and files.")
    return RunRequest(
        pipe_code=body.pipe_code,
        mthds_contents=contents,
        inputs=body.inputs,
        output_name=body.output_name,
        output_multiplicity=body.output_multiplicity,
        dynamic_output_concept_ref=body.dynamic_output_concept_ref,
        dry_run=body.dry_run,
        callback_urls=list(body.callback_urls or []),
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
