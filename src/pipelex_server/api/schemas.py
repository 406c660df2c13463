"""Request and response models of the HTTP API (what /openapi.json documents)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelex_server.api.body_guard import GuardedBody

RUN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
MAX_CALLBACK_URLS = 5
FILES_DESCRIPTION = (
    "The method as its whole tree (METHODS.toml, .mthds bundles, the files its steps read): tree path -> file entry, "
    'the file\'s text, {"base64": ...} or {"sha256": ..., "size": ...} for a blob the caller already holds. '
    "Within MAX_METHOD_TREE_FILES / _FILE_KIB / _TOTAL_KIB; no .py file. Send it or mthds_contents, not both."
)
BUNDLE_B64_DESCRIPTION = (
    "The method as a zip archive of its folder, base64-encoded (in place of files); the packages it ships under "
    ".mthds/methods/<name>/ are its dependencies. Limits: MAX_BUNDLE_FILES, MAX_BUNDLE_TOTAL_KIB."
)
RESOURCES_DESCRIPTION = (
    "Files the method's steps read (a PipeDocGen template_file): path -> standard base64. They join the tree sent in "
    "files or bundle_b64, or sit beside the mthds_contents bundles. Limits: MAX_RESOURCES_PER_REQUEST, "
    "MAX_RESOURCE_FILE_KIB, MAX_RESOURCES_TOTAL_KIB."
)
DEPENDENCIES_DESCRIPTION = (
    "The packages the method (sent in files) depends on: each package's address -> its tree, a map of file entries as "
    "in files. Limits: MAX_METHOD_DEPENDENCIES, MAX_METHOD_REQUEST_TOTAL_KIB."
)


METHOD_REF_MAX = 1024
METHOD_REF_DESCRIPTION = (
    "A published method package, fetched with git: github.com/<owner>/<repo>[/<selector>][@<tag>] (in place of files, "
    "bundle_b64 and mthds_contents); the packages it ships under .mthds/methods/ are its dependencies. The answer's "
    "method_provenance names the commit that ran."
)


class MethodSourceFields(BaseModel):
    """The run sources beside `files` and `mthds_contents` (api/protocol/sources.py reads them)."""

    method_ref: str | None = Field(default=None, min_length=1, max_length=METHOD_REF_MAX, description=METHOD_REF_DESCRIPTION)
    bundle_b64: str | None = Field(default=None, description=BUNDLE_B64_DESCRIPTION)
    resources: dict[str, Any] | None = Field(default=None, description=RESOURCES_DESCRIPTION)
    dependencies: dict[str, Any] | None = Field(default=None, description=DEPENDENCIES_DESCRIPTION)
    method_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="A stored method of the catalog: mt_… (its latest published version), mt_…@<n> or mt_…@draft (docs/platform.md).",
    )


class PipelineRequest(GuardedBody, MethodSourceFields):
    """Body of /api/v1/pipeline/execute and /api/v1/pipeline/start (hostile values refused: api/body_guard.py)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "pipe_code": "summarize",
                    "mthds_contents": [
                        'domain = "hello"\nmain_pipe = "summarize"\n\n[pipe.summarize]\ntype = "PipeLLM"\n'
                        'description = "Summarize the input text in one sentence"\ninputs = { text = "Text" }\n'
                        'output = "Text"\nprompt = "Summarize in one sentence:\\n@text"\n'
                    ],
                    "inputs": {"text": "Pipelex turns plain-language pipeline definitions into reproducible AI workflows."},
                }
            ]
        },
    )

    pipe_code: str | None = Field(
        default=None, min_length=1, max_length=512, description="Pipe to run; defaults to the bundle's main_pipe."
    )
    mthds_contents: list[Annotated[str, Field(max_length=4 * 1024 * 1024)]] | None = Field(
        default=None, max_length=64, description="Raw .mthds (TOML) file contents; always a list."
    )
    files: dict[str, Any] | None = Field(default=None, description=FILES_DESCRIPTION)
    inputs: dict[str, Any] | None = Field(default=None, description="Pipeline inputs by name (see docs/pipe-run.md).")
    output_name: str | None = Field(default=None, max_length=256)
    output_multiplicity: bool | int | None = None
    dynamic_output_concept_ref: str | None = Field(default=None, max_length=512)
    pipeline_run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN, description="Client-chosen run id (idempotency key).")
    dry_run: bool = Field(default=False, description="Run with mocked inference: no provider is called.")
    callback_urls: list[Annotated[str, Field(min_length=1, max_length=2048)]] | None = Field(
        default=None, max_length=MAX_CALLBACK_URLS, description="URLs that receive the run document when it ends."
    )


class ValidateRequest(GuardedBody, MethodSourceFields):
    model_config = ConfigDict(extra="forbid")

    mthds_contents: list[Annotated[str, Field(max_length=4 * 1024 * 1024)]] | None = Field(default=None, min_length=1, max_length=64)
    files: dict[str, Any] | None = Field(default=None, description=FILES_DESCRIPTION)
    pipe_code: str | None = Field(default=None, min_length=1, max_length=512)


class WorkingMemory(BaseModel):
    root: dict[str, Any]
    aliases: dict[str, Any]
    absences: dict[str, Any] = Field(
        default_factory=dict, description="The runtime's recorded absences: a declared slot resolved to no value (name -> record)."
    )


class PipeOutput(BaseModel):
    working_memory: WorkingMemory


class Usage(BaseModel):
    tokens: dict[str, int] = Field(description="Tokens by category, summed over every inference call.")
    cost_usd: float | None = Field(description="Total cost in USD; null when a model has no rate table.")
    by_pipe: list[dict[str, Any]] = Field(description="One record per inference call.")


class ExecuteResponse(BaseModel):
    pipeline_run_id: str
    created_at: str
    pipeline_state: Literal["COMPLETED"]
    finished_at: str | None
    main_stuff_name: str | None
    pipe_output: PipeOutput | None
    output_url: str | None = Field(
        default=None, description="Set when the output was too large to inline in the run document (the answer still holds it)."
    )
    usage: Usage | None
    dry_run: bool
    crate_fingerprint: str | None = Field(
        default=None,
        description="The fingerprint of the library crate the run's method was loaded into (the runtime's): it changes with "
        "the meaning of the method's concepts and pipes, not with their formatting. Null when the run was built from none.",
    )
    method_provenance: dict[str, Any] | None = Field(
        default=None, description="Where a method_ref run's package came from: address, tag, commit_sha, tree_digest, display_name."
    )


class CallbackRecord(BaseModel):
    url: str
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: str | None = None
    next_attempt_at: str | None = None


class RunDocument(BaseModel):
    pipeline_run_id: str
    pipeline_state: Literal["STARTED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "ERROR"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    pipe_code: str | None
    main_stuff_name: str | None
    pipe_output: PipeOutput | None
    output_url: str | None
    error: dict[str, Any] | None
    usage: Usage | None
    dry_run: bool
    workflow_id: str | None
    callbacks: list[CallbackRecord]
    method_provenance: dict[str, Any] | None = Field(
        default=None, description="Where a method_ref run's package came from: address, tag, commit_sha, tree_digest, display_name."
    )
    method_id: str | None = Field(default=None, description="The catalog method the run ran (a run by method_id), when it has one.")
    method_version: str | None = Field(default=None, description="Which version of that method ran: its number, or draft.")


class RunList(BaseModel):
    runs: list[RunDocument]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class StartResponse(BaseModel):
    pipeline_run_id: str
    created_at: str
    pipeline_state: Literal["STARTED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "ERROR"]
    finished_at: str | None
    main_stuff_name: str | None
    pipe_output: PipeOutput | None
    workflow_id: str | None
    crate_fingerprint: str | None = Field(
        default=None,
        description="The fingerprint of the library crate the run's method was loaded into when /start checked it (the "
        "runtime's; the run reports the same at its end). Null when the check built none.",
    )
    method_provenance: dict[str, Any] | None = Field(
        default=None, description="Where a method_ref run's package came from: address, tag, commit_sha, tree_digest, display_name."
    )


class ValidationItem(BaseModel):
    code: str | None
    detail: str | None
    location: dict[str, Any] | None = None


class ValidateResponse(BaseModel):
    success: bool
    message: str
    errors: list[ValidationItem]
    pipelex_bundle_blueprint: dict[str, Any] | None
    pipe_structures: dict[str, Any]
    graph_spec: dict[str, Any] | None
    warnings: list[Any] = Field(default_factory=list)
    validated_pipes: list[dict[str, Any]] = Field(default_factory=list, description="Each pipe's dry-run outcome")
    pending_signatures: list[str] = Field(default_factory=list, description="Pipes still declared as signatures")
    is_runnable: bool | None = Field(default=None, description="False while signatures are pending")
    problem: dict[str, Any] | None = Field(default=None, description="The problem document of an invalid bundle")


class Problem(BaseModel):
    """RFC 9457 problem document (application/problem+json)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable dotted error code, e.g. input.missing")
    request_id: str | None = None
    location: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    next_step: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None


class VersionResponse(BaseModel):
    implementation: str
    implementation_version: str
    runtime_version: str
    protocol_version: str


class HealthResponse(BaseModel):
    status: str
    checks: dict[str, Any] | None = None


# The problem answers every route documents. The schema is a reference written here rather than a `"model": Problem`:
# FastAPI builds a pydantic TypeAdapter for each model response of each route, at import and again when a request
# first reaches the route (~1,200 of them: ~0.15 s of the boot, and the first request's). The referenced schema is
# added to the document once (``add_problem_schema``); the document is the same as with the model.
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "content": {"application/json": {"schema": {"$ref": PROBLEM_SCHEMA_REF}}, "application/problem+json": {}},
        "description": description,
    }
    for status, description in {
        400: "A malformed header, a Host this server does not serve, or two caller identities",
        401: "Missing, invalid or expired credentials",
        403: "AUTH_MODE=none: a state-changing request from an Origin that is not allowed",
        404: "No such run (or not the caller's)",
        409: "Conflict: idempotency key reused, run already ended or still running",
        413: "Request body too large",
        422: "Invalid request, bundle or inputs; a body nested too deeply or holding text that is not valid Unicode",
        429: "Provider rate limit, or a per-caller limit (active runs, event streams, redeliveries)",
        500: "Unexpected server error",
        501: "No backend for the model",
        502: "Provider failure",
        503: "Inference not configured, or server not ready",
        504: "Provider timeout",
    }.items()
}


def add_problem_schema(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the ``Problem`` schema its responses reference (see PROBLEM_RESPONSES)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" not in schemas:
        schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        for member in schema["properties"].values():  # as FastAPI writes a response schema: a member's default is left out
            member.pop("default", None)
        schemas["Problem"] = schema
        document["components"]["schemas"] = dict(sorted(schemas.items()))  # FastAPI lists the schemas by name
    return document
