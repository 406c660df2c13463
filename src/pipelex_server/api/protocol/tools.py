"""The crate and tool routes' wire shapes: request bodies, the method they send read into a tree, and the answers.

`/v1/resolve`, `/v1/pipe-io` and `/v1/codegen` take a method as `files` (its tree, with its `dependencies` and
`resources`, read as the run routes read them), as `method_ref` (a published package, fetched as the run routes fetch
it, its shipped packages its dependencies) or, our extension, as `mthds_contents`; `/v1/lint` and `/v1/format` take one `.mthds` text. The answers are the
official server's (`pipelex-api` 0.92.2): a 200 verdict discriminated on `is_valid` for the crate routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelex_server.api.body_guard import GuardedBody, check_bundle_text
from pipelex_server.api.protocol.requests import MAX_BUNDLE_CHARS, MAX_BUNDLE_FILES
from pipelex_server.api.protocol.sources import read_source
from pipelex_server.api.schemas import (
    DEPENDENCIES_DESCRIPTION,
    FILES_DESCRIPTION,
    METHOD_REF_DESCRIPTION,
    METHOD_REF_MAX,
    RESOURCES_DESCRIPTION,
)
from pipelex_server.engine.method_tree_files import MethodTreeFiles
from pipelex_server.errors import ApiProblem
from pipelex_server.runs.model import Caller

if TYPE_CHECKING:
    from pipelex_server.engine.runtime import Engine

MAX_TOOL_CONTENT_BYTES = 1024 * 1024  # one `.mthds` text for lint or format (the official server's MAX_MTHDS_FILE_KIB)
MAX_PIPE_REF_CHARS = 256
# Method selectors the official server also takes, which this server does not serve on these routes (yet).
UNSERVED_SELECTORS = ("read_scope",)  # method_id names a catalog method (api/protocol/method_ids.py)

# ------------------------------------------------------------------------------------------------------------ bodies


class CrateBody(GuardedBody):
    """Body of `/v1/resolve`: the method, as `files`, `method_ref` or `mthds_contents`. Unknown members are ignored, as the
    official server ignores them; a method selector this server does not serve is refused by name."""

    model_config = ConfigDict(extra="allow")

    files: dict[str, Any] | None = Field(default=None, description=FILES_DESCRIPTION)
    method_ref: str | None = Field(default=None, min_length=1, max_length=METHOD_REF_MAX, description=METHOD_REF_DESCRIPTION)
    dependencies: dict[str, Any] | None = Field(default=None, description=DEPENDENCIES_DESCRIPTION)
    resources: dict[str, Any] | None = Field(default=None, description=RESOURCES_DESCRIPTION)
    mthds_contents: list[Annotated[str, Field(max_length=MAX_BUNDLE_CHARS)]] | None = Field(
        default=None,
        max_length=MAX_BUNDLE_FILES,
        description="Our extension: the method as bundle texts (each read as bundle_<n>.mthds). Send it or files, not both.",
    )


class PipeIOBody(CrateBody):
    """Body of `/v1/pipe-io`: the method, the pipe to describe, and the whole-method and echo opt-ins."""

    pipe_ref: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PIPE_REF_CHARS,
        description="The pipe to describe (`domain.pipe_code`, or a bare code). Default: the METHODS.toml `main_pipe`, "
        "else the one `main_pipe` the method's bundles declare.",
    )
    all_pipes: bool = Field(default=False, description="Describe every pipe the method loads instead of the selected one.")
    include_files: bool = Field(default=False, description="Echo the method's `.mthds` bundles (tree path -> text) as `files`.")


class CodegenBody(CrateBody):
    """Body of `/v1/codegen`: the method and the two projection axes the runtime offers."""

    kind: str = Field(..., max_length=64, description="What to project: `types` (the crate's concept set as typed models).")
    target: str = Field(..., max_length=64, description="For whom: `ts-zod`, `python-pydantic` or `python-structures`.")
    pipe_ref: str | None = Field(default=None, max_length=MAX_PIPE_REF_CHARS, description="Not accepted for `types`.")


class ToolBody(GuardedBody):
    content: str = Field(..., description="One .mthds file's text, at most 1 MiB.")

    @field_validator("content")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if len(value.encode("utf-8", "surrogatepass")) > MAX_TOOL_CONTENT_BYTES:
            raise ValueError(f"content exceeds the {MAX_TOOL_CONTENT_BYTES // 1024} KiB limit for one .mthds file")
        check_bundle_text(value, ["body", "content"])
        return value


class LintBody(ToolBody):
    """Body of `/v1/lint`."""

    source: str | None = Field(default=None, max_length=1024, description="The file's logical name (accepted; not yet in diagnostics).")


class FormatBody(ToolBody):
    """Body of `/v1/format`."""

    options: dict[str, Any] | None = Field(default=None, description="Formatter options, such as `column_width`.")


# ------------------------------------------------------------------------------------------------------------ method


def refuse_unserved_selectors(body: BaseModel) -> None:
    for name, value in (body.model_extra or {}).items():
        if name in UNSERVED_SELECTORS and value is not None:
            raise ApiProblem(
                status=422,
                code="request.unsupported",
                detail=f"This server does not accept '{name}' on this route; send the method's tree in files.",
                params={"field": name, "reason": "not_supported"},
                location={"path": ["body", name]},
            )


async def method_of(request: Request, engine: Engine, caller: Caller, body: CrateBody) -> MethodTreeFiles:
    """The method a crate route's body sends, as one tree, read as the run routes read it (`api/protocol/sources.py`):
    `files` with its `dependencies` and `resources` (hash entries from the caller's blobs, the tree limits, every refusal
    a 4xx naming the field or file), the package `method_ref` fetches (with the packages it ships), or the
    `mthds_contents` bundles (with their `resources`) as one tree."""
    refuse_unserved_selectors(body)
    tree = await read_source(request, engine, caller, body, validating=True)
    if tree is not None:
        return tree
    if not body.mthds_contents:
        raise ApiProblem(
            status=422,
            code="request.invalid",
            detail="Send the method as files (its tree) or method_ref (a published package).",
            params={"field": "files"},
            location={"path": ["body", "files"]},
        )
    return MethodTreeFiles.of({f"bundle_{index}.mthds": text.encode("utf-8") for index, text in enumerate(body.mthds_contents)})


# ------------------------------------------------------------------------------------------------------------ answers


class CrateInvalid(BaseModel):
    """The 200 invalid arm of the crate routes: the method could not be parsed, loaded or validated."""

    is_valid: Literal[False] = False
    errors: list[dict[str, Any]] = Field(description="One MTHDS problem item per error (code, detail, params, location).")
    message: str


class ResolveValid(BaseModel):
    """The normalized library crate (canonical JSON encoding, `fingerprint` included)."""

    is_valid: Literal[True] = True
    crate: dict[str, Any]
    message: str


class PipeIOValid(BaseModel):
    """The selected pipe's (or every pipe's) I/O contracts, input form and output form, keyed by qualified pipe ref."""

    is_valid: Literal[True] = True
    pipe_ref: str | None
    pipe_io_contracts: dict[str, Any]
    input_form: dict[str, Any]
    output_form: dict[str, Any]
    default_pipe_ref: str | None
    pending_signatures: list[str]
    is_runnable: bool
    files: dict[str, str] | None = Field(default=None, description="Only with include_files: the method's bundles.")


class GeneratedArtifact(BaseModel):
    path: str
    content: str


class CodegenValid(BaseModel):
    """The stamped artifacts and their lock: written verbatim, they pass the offline `pipelex codegen check`."""

    is_valid: Literal[True] = True
    kind: str
    target: str
    crate_fingerprint: str
    engine_version: str
    artifacts: list[GeneratedArtifact]
    lock: str
    lock_filename: str
    message: str


class Diagnostic(BaseModel):
    kind: str
    severity: str
    message: str
    location: str | None
    range: dict[str, int] | None


class LintAnswer(BaseModel):
    diagnostics: list[Diagnostic]


class FormatAnswer(BaseModel):
    formatted: str
    changed: bool
    diagnostics: list[Diagnostic]


class ModelCheckAnswer(BaseModel):
    """Whether a model reference resolves, as what, to which model; `resolution` is `resolved` or `not_found`."""

    model_config = ConfigDict(extra="allow")

    reference: str
    kind: str
    name: str
    category: str | None
    resolution: str
    matches: list[dict[str, Any]]
    suggestions: list[Any]
    other_kinds: list[Any]
    other_categories: list[Any]
