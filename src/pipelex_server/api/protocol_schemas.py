"""The MTHDS Protocol's wire shapes (contract §7) and how our run documents map onto them.

The official clients (`mthds`'s `MthdsAPIClient`, `pipelex-sdk`'s `PipelexAPIClient`) send a method as `files`
(tree path -> file entry), read a started run through `/v1/runs/{id}/status|progress|results`, name run states
in the SDK's words, and parse every error as a protocol `Problem` (which requires `domain`, `retry` and
`next_step`). Everything here is pure: no I/O, no service; the routes in `routes/protocol.py` call it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from mthds.method_tree.file_entry import Base64FileEntry, FileEntry, HashFileEntry
from mthds.method_tree.tree_path import tree_path_violation
from mthds.protocol.models import ModelCategory
from mthds.protocol.problem.client_problems import render_template
from mthds.protocol.problem.registry import CORE_CODE_SPECS, ProblemDomain, RetryVerdict, StepKind
from pydantic import BaseModel, ConfigDict, Field

from pipelex_server.api.body_guard import GuardedBody, check_bundle_text, refuse_nul
from pipelex_server.api.schemas import MAX_CALLBACK_URLS, RUN_ID_PATTERN
from pipelex_server.errors import MTHDS_TYPE_BASE, ApiProblem
from pipelex_server.runs.service import RunRequest

BUNDLE_SUFFIX = ".mthds"
MAX_BUNDLE_FILES = 64
MAX_BUNDLE_CHARS = 4 * 1024 * 1024
IMPLEMENTATION = "pipelex-server"  # anything but "pipelex-api" tells PipelexAPIClient that /v1/runs/* is served
RESULTS_RETRY_AFTER_SECONDS = 1

# ---------------------------------------------------------------- run states

# Our run states -> the SDK's RunStatus (docs/protocol.md). FAILED becomes TIMED_OUT when the run's error is
# run.timed_out; ERROR (the infrastructure lost the run) has no SDK word of its own: TERMINATED.
STATUS_OF_STATE: dict[str, str] = {
    "STARTED": "PENDING",
    "RUNNING": "RUNNING",
    "COMPLETED": "COMPLETED",
    "FAILED": "FAILED",
    "CANCELLED": "CANCELLED",
    "ERROR": "TERMINATED",
}
# The SDK's RunStatus -> the progress snapshot's words (as the hosted platform maps them).
PROGRESS_STATUS: dict[str, str] = {
    "PENDING": "pending",
    "RUNNING": "running",
    "COMPLETED": "succeeded",
    "FAILED": "failed",
    "TIMED_OUT": "failed",
    "CANCELLED": "canceled",
    "TERMINATED": "canceled",
}
RunStatus = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT", "TERMINATED"]


def protocol_status(state: str, error: dict[str, Any] | None = None) -> str:
    if state == "FAILED" and (error or {}).get("code") == "run.timed_out":
        return "TIMED_OUT"
    return STATUS_OF_STATE[state]


# ---------------------------------------------------------------- requests


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


# ---------------------------------------------------------------- problems

# Our own codes (not in the MTHDS core registry): domain, retry, next step.
_OWN_CODES: dict[str, tuple[ProblemDomain, RetryVerdict, StepKind, str]] = {
    "inference.not_configured": (
        ProblemDomain.OPERATOR,
        RetryVerdict.NO,
        StepKind.FIX_CONFIGURATION,
        "Set a provider key or OPENAI_BASE_URL on the server and restart it, or run with dry_run.",
    ),
    "server.not_ready": (ProblemDomain.RUNTIME, RetryVerdict.YES, StepKind.WAIT, "Wait a few seconds, then send the request again."),
    "input.reserved_key": (
        ProblemDomain.INPUT,
        RetryVerdict.NO,
        StepKind.CHANGE_INPUT,
        "Rename the input key, then send the request again.",
    ),
    "callback.secret_missing": (
        ProblemDomain.OPERATOR,
        RetryVerdict.NO,
        StepKind.FIX_CONFIGURATION,
        "Set COMPLETION_CALLBACK_SECRET on the server, or send no callback_urls.",
    ),
    "callback.url_refused": (ProblemDomain.INPUT, RetryVerdict.NO, StepKind.CHANGE_INPUT, "Send a public http(s) callback URL."),
    "request.too_deeply_nested": (
        ProblemDomain.INPUT,
        RetryVerdict.NO,
        StepKind.CHANGE_INPUT,
        "Flatten the value or bundle at the problem's location (at most params.limit levels), then send the request again.",
    ),
    "request.invalid_text": (
        ProblemDomain.INPUT,
        RetryVerdict.NO,
        StepKind.CHANGE_INPUT,
        "Remove the lone surrogate or NUL character at the problem's location, then send the request again.",
    ),
}
_GENERIC_STEP = "Read the problem's detail, then act on it."


def protocol_members(code: str, status: int | None, params: dict[str, Any] | None) -> dict[str, Any]:
    """`domain`, `retry` and `next_step` for a code: the MTHDS registry's, ours, or a fallback by status."""
    spec = CORE_CODE_SPECS.get(code)  # type: ignore[call-overload]  # StrEnum keys: a plain str finds them
    if spec is not None:
        # as the runtime words a caller's problem: the actor's step, but for the operator's domain
        step = spec.other_step if spec.domain is ProblemDomain.OPERATOR else spec.actor_step
        try:
            detail = render_template(step.detail, params=params or {})
        except ValueError:  # a parameter the template names is not on our problem
            detail = _GENERIC_STEP
        return {"domain": spec.domain.value, "retry": spec.retry.value, "next_step": {"kind": step.kind.value, "detail": detail}}
    if code in _OWN_CODES:
        domain, retry, kind, detail = _OWN_CODES[code]
    elif status in (429, 503):
        domain, retry, kind, detail = ProblemDomain.RUNTIME, RetryVerdict.YES, StepKind.WAIT, "Wait a moment, then send the request again."
    elif status is not None and status < 500:
        domain, retry, kind, detail = ProblemDomain.INPUT, RetryVerdict.NO, StepKind.CHANGE_INPUT, _GENERIC_STEP
    else:
        domain, retry, kind, detail = ProblemDomain.RUNTIME, RetryVerdict.NO, StepKind.REPORT, "Report the problem with its request_id."
    return {"domain": domain.value, "retry": retry.value, "next_step": {"kind": kind.value, "detail": detail}}


def complete_problem(problem: ApiProblem) -> None:
    """Give a problem the members a protocol reader requires; the members it already has are kept."""
    for key, value in protocol_members(problem.code, problem.status, problem.members.get("params")).items():
        problem.members.setdefault(key, value)


def protocol_problem(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored problem document, completed for a protocol reader (declared members are never null there)."""
    if not document:
        return None
    completed = {key: value for key, value in document.items() if value is not None or key == "request_id"}
    completed.setdefault("type", MTHDS_TYPE_BASE + str(completed.get("code")))
    completed.setdefault("title", "The run did not succeed")
    completed.setdefault("detail", "The run did not succeed.")
    completed.setdefault("code", "runtime.unexpected")
    for key, value in protocol_members(str(completed["code"]), completed.get("status"), completed.get("params")).items():
        completed.setdefault(key, value)
    return completed


def protocol_item(item: dict[str, Any]) -> dict[str, Any] | None:
    """A validation finding as a protocol ProblemItem (code and detail strings, no null members)."""
    code, detail = item.get("code"), item.get("detail")
    if not isinstance(code, str) or not isinstance(detail, str):
        return None
    return {key: value for key, value in item.items() if value is not None}


# ---------------------------------------------------------------- answers


def _pipe_output(document: dict[str, Any]) -> dict[str, Any]:
    """Our pipe_output, as the protocol's DictPipeOutput: the working memory, the run id, the usage records."""
    usage = document.get("usage") or {}
    return {
        **(document.get("pipe_output") or {}),
        "pipeline_run_id": document["pipeline_run_id"],
        "tokens_usages": usage.get("by_pipe") or [],
    }


def execute_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """RunService.execute's answer -> the protocol's RunResultExecute (base fields, then our extensions)."""
    return {
        "pipeline_run_id": answer["pipeline_run_id"],
        "pipe_output": _pipe_output(answer),
        "main_stuff_name": answer["main_stuff_name"],
        "status": "COMPLETED",
        "pipeline_state": answer["pipeline_state"],
        "created_at": answer["created_at"],
        "finished_at": answer["finished_at"],
        "usage": answer["usage"],
        "dry_run": answer["dry_run"],
    }


def start_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """RunService.start's answer -> the protocol's RunResultStart."""
    return {
        "pipeline_run_id": answer["pipeline_run_id"],
        "status": protocol_status(answer["pipeline_state"]),
        "pipeline_state": answer["pipeline_state"],
        "created_at": answer["created_at"],
        "workflow_id": answer["workflow_id"],
    }


def status_answer(document: dict[str, Any]) -> dict[str, Any]:
    """A run document -> the run read the SDK's get_run_status parses (RunRead)."""
    return {
        "pipeline_run_id": document["pipeline_run_id"],
        "pipe_code": document["pipe_code"],
        "status": protocol_status(document["pipeline_state"], document["error"]),
        "created_at": document["created_at"],
        "finished_at": document["finished_at"],
        "error": protocol_problem(document["error"]),
        "degraded": False,
        "pipeline_state": document["pipeline_state"],
        "started_at": document["started_at"],
        "main_stuff_name": document["main_stuff_name"],
        "dry_run": document["dry_run"],
        "workflow_id": document["workflow_id"],
    }


RESULT_ARTIFACTS: dict[str, tuple[str, ...]] = {
    "graph_spec": ("graph_spec", "graph_assembly_error"),
    "pipe_io_contracts": ("pipe_io_contracts",),
    "input_form": ("input_form",),
    "output_form": ("output_form",),
    "main_stuff": ("main_stuff",),
    "working_memory": ("working_memory",),
    "tokens_usages": ("tokens_usages", "usage_assembly_error"),
}


def parse_artifacts(raw: str | None) -> set[str] | None:
    if raw is None:
        return None
    names = {name.strip() for name in raw.split(",") if name.strip()}
    unknown = sorted(names - set(RESULT_ARTIFACTS))
    if not names or unknown:
        raise ApiProblem(
            status=422,
            code="request.invalid",
            detail=f"artifacts must name some of: {', '.join(RESULT_ARTIFACTS)}"
            + (f" (unknown: {', '.join(unknown)})." if unknown else "."),
            params={"field": "artifacts"},
        )
    return names


def results_answer(document: dict[str, Any], artifacts: set[str] | None) -> dict[str, Any]:
    """A COMPLETED run document -> the SDK's RunResults; `artifacts` narrows it to the fields asked for."""
    pipe_output = document.get("pipe_output")
    if not pipe_output:
        raise ApiProblem(
            status=409,
            code="run.output_external",
            detail="The run's output is too large to inline; read it at its output_url.",
            params={"pipeline_run_id": document["pipeline_run_id"], "output_url": document.get("output_url")},
        )
    memory = pipe_output["working_memory"]
    main = memory["root"].get(document["main_stuff_name"] or "")
    fields = {
        "main_stuff": main["content"] if main else None,
        "working_memory": memory,
        "tokens_usages": (document.get("usage") or {}).get("by_pipe") or [],
        "usage_assembly_error": None,
        "graph_spec": None,
        "graph_assembly_error": None,
        "pipe_io_contracts": None,
        "input_form": None,
        "output_form": None,
    }
    wanted = set(fields) if artifacts is None else {field for name in artifacts for field in RESULT_ARTIFACTS[name]}
    answer: dict[str, Any] = {"pipeline_run_id": document["pipeline_run_id"]}
    answer.update({key: value for key, value in fields.items() if key in wanted})
    if artifacts is None:
        answer["pipe_output"] = _pipe_output(document)
    answer.update(status="COMPLETED", main_stuff_name=document["main_stuff_name"], usage=document["usage"])
    return answer


def run_failed_problem(document: dict[str, Any]) -> ApiProblem:
    """The results read of a run that ended without success: 409 run.failed, the run's own problem as run_error."""
    run_id = document["pipeline_run_id"]
    status = protocol_status(document["pipeline_state"], document["error"])
    run_error = protocol_problem(document["error"])
    reason = f": {run_error['detail']}" if run_error else "."
    return ApiProblem(
        status=409,
        code="run.failed",
        detail=f"The run '{run_id}' ended as '{status}', without success{reason}",
        params={"pipeline_run_id": run_id, "run_status": status},
        pipeline_run_id=run_id,
        run_error=run_error,
    )


# ---------------------------------------------------------------- progress

# The controllers whose children a progress path nests, and the segment each child gets.
_CHILD_SEGMENT = {"PipeSequence": "step", "PipeParallel": "branch", "PipeBatch": "item", "PipeCondition": "outcome"}


def _iso_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def progress_answer(document: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's progress snapshot (the SDK's RunProgress), projected from its event log.

    Events carry no invocation ids, so nesting is inferred: a pipe that starts while a controller is open is that
    controller's child (the latest open one), and a pipe_finished / pipe_failed closes the latest open invocation of
    that pipe. Exact for sequences and batches; concurrent nested controllers may be attributed to a sibling.
    """
    status = protocol_status(document["pipeline_state"], document["error"])
    progress_status = PROGRESS_STATUS[status]
    invocations: list[dict[str, Any]] = []
    open_invocations: list[dict[str, Any]] = []
    children: dict[str, int] = {}
    paths: set[str] = set()
    for event in events:
        data = event["data"]
        if event["event"] == "pipe_started":
            pipe_code = str(data.get("pipe_code") or "")
            pipe_ref = str(data.get("pipe_ref") or pipe_code)
            parent = next((inv for inv in reversed(open_invocations) if inv["pipe_type"] in _CHILD_SEGMENT), None)
            if parent is None:
                path = pipe_code
            else:
                children[parent["path"]] = children.get(parent["path"], 0) + 1
                path = f"{parent['path']}/{_CHILD_SEGMENT[parent['pipe_type']]}_{children[parent['path']]}"
            unique, count = path, 1
            while unique in paths:
                count += 1
                unique = f"{path}_{count}"
            paths.add(unique)
            invocation = {
                "path": unique,
                "pipe_code": pipe_code,
                "pipe_ref": pipe_ref,
                "pipe_type": str(data.get("pipe_type") or ""),
                "status": "running",
                "started_at": data.get("at"),
                "ended_at": None,
            }
            invocations.append(invocation)
            open_invocations.append(invocation)
        elif event["event"] in ("pipe_finished", "pipe_failed"):
            invocation = next((inv for inv in reversed(open_invocations) if inv["pipe_code"] == data.get("pipe_code")), None)
            if invocation is None:
                continue
            open_invocations.remove(invocation)
            invocation["ended_at"] = data.get("at")
            invocation["status"] = "succeeded" if event["event"] == "pipe_finished" else "failed"
            if event["event"] == "pipe_failed" and data.get("error"):
                error = data["error"]
                code = str(error.get("code") or "runtime.unexpected")
                problem = {
                    "type": MTHDS_TYPE_BASE + code,
                    "title": "The pipe failed",
                    "detail": str(error.get("detail") or ""),
                    "code": code,
                }
                invocation["last_failure"] = {"problem": protocol_problem(problem), "at": data.get("at")}
    if progress_status in ("succeeded", "failed", "canceled"):
        for invocation in open_invocations:
            invocation["status"] = "canceled"
    return {
        "pipeline_run_id": document["pipeline_run_id"],
        "mode": "dry" if document["dry_run"] else "live",
        "status": progress_status,
        "version": events[-1]["seq"] if events else 0,
        "assembled_at": _iso_now(),
        "summary": _summary(progress_status, invocations, open_invocations, document),
        "invocations": invocations,
        "pipeline_state": document["pipeline_state"],
    }


def _summary(status: str, invocations: list[dict[str, Any]], still_open: list[dict[str, Any]], document: dict[str, Any]) -> str:
    done = sum(1 for inv in invocations if inv["status"] == "succeeded")
    if status == "pending":
        return "Waiting to start."
    if status == "running":
        if not still_open:
            return "Starting." if not invocations else f"Running: {done} of {len(invocations)} pipes done."
        return f"Running {still_open[-1]['pipe_code']}: {done} of {len(invocations)} pipes done, {len(still_open)} running."
    if status == "succeeded":
        return f"Completed: {done} pipes ran."
    detail = (document.get("error") or {}).get("detail")
    word = "Failed" if status == "failed" else "Stopped"
    return f"{word}: {detail}" if detail else f"{word}."


# ---------------------------------------------------------------- validate, models, version


def validate_answer(verdict: dict[str, Any], *, markdown: bool) -> dict[str, Any]:
    """Engine.validate's verdict -> the protocol's ValidationResult (discriminated on is_valid)."""
    message = str(verdict.get("message") or "")
    if verdict.get("success"):
        answer: dict[str, Any] = {
            "is_valid": True,
            "bundle_blueprint": verdict.get("pipelex_bundle_blueprint") or {},
            "graph_spec": verdict.get("graph_spec"),
            "validated_pipes": verdict.get("validated_pipes") or [],
            "pending_signatures": verdict.get("pending_signatures") or [],
            "is_runnable": bool(verdict.get("is_runnable", True)),
            "message": message,
            "warnings": [item for item in map(protocol_item, verdict.get("warnings") or []) if item],
            "pipe_structures": verdict.get("pipe_structures") or {},
        }
        if markdown:
            answer["rendered_markdown"] = f"**Valid.** {message}"
        return answer
    errors = [item for item in map(protocol_item, verdict.get("errors") or []) if item]
    if not errors:
        errors = [{"code": "method.invalid", "detail": message or "The method does not validate."}]
    answer = {"is_valid": False, "errors": errors, "pending_signatures": [], "is_runnable": False, "message": message}
    if markdown:
        lines = "\n".join(f"- `{item['code']}`: {item['detail']}" for item in errors)
        answer["rendered_markdown"] = f"**Invalid.** {message}\n\n{lines}"
    return answer


def parse_category(raw: str | None) -> ModelCategory | None:
    if raw is None:
        return None
    try:
        return ModelCategory(raw)
    except ValueError as exc:
        raise ApiProblem(
            status=422,
            code="request.invalid",
            detail=f"type must be one of: {', '.join(category.value for category in ModelCategory)}.",
            params={"field": "type"},
        ) from exc


def models_answer(deck: dict[str, Any], category: ModelCategory | None) -> dict[str, Any]:
    if category is None:
        return deck
    return {**deck, "models": [model for model in deck.get("models") or [] if model.get("type") == category.value]}


def version_answer(*, implementation_version: str, versions: dict[str, str]) -> dict[str, Any]:
    return {
        "protocol_version": versions["protocol_version"],
        "runner_version": implementation_version,
        "blob_store": False,
        "implementation": IMPLEMENTATION,
        "implementation_version": implementation_version,
        "runtime_version": versions["runtime_version"],
    }


# ---------------------------------------------------------------- lifecycle response models (OpenAPI)


class ProtocolRunRead(BaseModel):
    """GET /v1/runs/{id}/status (the shape pipelex-sdk's RunRead reads); our run document's fields ride along."""

    model_config = ConfigDict(extra="allow")

    pipeline_run_id: str
    pipe_code: str | None
    status: RunStatus
    created_at: str
    finished_at: str | None
    error: dict[str, Any] | None = Field(description="The run's own problem document when it did not succeed.")
    degraded: bool


class ProtocolInvocation(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str
    pipe_code: str
    pipe_ref: str
    pipe_type: str
    status: Literal["running", "succeeded", "failed", "canceled"]
    started_at: str | None
    ended_at: str | None


class ProtocolRunProgress(BaseModel):
    """GET /v1/runs/{id}/progress (the shape pipelex-sdk's RunProgress reads)."""

    model_config = ConfigDict(extra="allow")

    pipeline_run_id: str
    mode: Literal["live", "dry"]
    status: Literal["pending", "running", "succeeded", "failed", "canceled"]
    version: int = Field(ge=0, description="The run's last event number: never decreases.")
    assembled_at: str
    summary: str
    invocations: list[ProtocolInvocation]


class ProtocolRunResults(BaseModel):
    """GET /v1/runs/{id}/results 200 (the shape pipelex-sdk's RunResults reads)."""

    model_config = ConfigDict(extra="allow")

    pipeline_run_id: str
    main_stuff: Any = None
    working_memory: dict[str, Any] | None = None
    tokens_usages: list[dict[str, Any]] | None = None
