"""Protocol answers: run documents, engine verdicts and the model deck shaped as the /v1 routes return them."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from mthds.protocol.models import ModelCategory

from pipelex_server.api.protocol.problems import protocol_item, protocol_problem
from pipelex_server.errors import ApiProblem
from pipelex_server.runs.progress import progress_snapshot, protocol_status

IMPLEMENTATION = "pipelex-server"  # anything but "pipelex-api" tells PipelexAPIClient that /v1/runs/* is served
RESULTS_RETRY_AFTER_SECONDS = 1

# ---------------------------------------------------------------- runs


def _pipe_output(document: dict[str, Any]) -> dict[str, Any]:
    """Our pipe_output, as the protocol's DictPipeOutput: the working memory, the run id, the usage records."""
    usage = document.get("usage") or {}
    return {
        **(document.get("pipe_output") or {}),
        "pipeline_run_id": document["pipeline_run_id"],
        "tokens_usages": usage.get("by_pipe") or [],
    }


# What the official server adds to a run's answer when it has it: the crate's fingerprint, a method_ref's provenance.
_PROVENANCE_MEMBERS = ("crate_fingerprint", "method_provenance")


def _provenance(answer: dict[str, Any]) -> dict[str, Any]:
    return {name: answer[name] for name in _PROVENANCE_MEMBERS if answer.get(name) is not None}


def execute_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """RunService.execute's answer -> the protocol's RunResultExecute (base fields, then our extensions).

    `state` is the run's state as the official server names it (its RunState: COMPLETED here)."""
    return {
        "pipeline_run_id": answer["pipeline_run_id"],
        "pipe_output": _pipe_output(answer),
        "main_stuff_name": answer["main_stuff_name"],
        "state": answer["pipeline_state"],
        "status": "COMPLETED",
        "pipeline_state": answer["pipeline_state"],
        "created_at": answer["created_at"],
        "finished_at": answer["finished_at"],
        "usage": answer["usage"],
        "dry_run": answer["dry_run"],
        **_provenance(answer),
    }


def start_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """RunService.start's answer -> the protocol's RunResultStart; `state` as the official server names it."""
    return {
        "pipeline_run_id": answer["pipeline_run_id"],
        "state": answer["pipeline_state"],
        "status": protocol_status(answer["pipeline_state"]),
        "pipeline_state": answer["pipeline_state"],
        "created_at": answer["created_at"],
        "workflow_id": answer["workflow_id"],
        **_provenance(answer),
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


def progress_answer(document: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's progress snapshot, each pipe failure's problem completed for protocol readers."""
    snapshot = progress_snapshot(document, events)
    for invocation in snapshot["invocations"]:
        if "last_failure" in invocation:
            invocation["last_failure"]["problem"] = protocol_problem(invocation["last_failure"]["problem"])
    return snapshot


# ---------------------------------------------------------------- validate, models, version


VALIDATION_VIEWS = ("input_form", "output_form")  # the `views` tokens; any other token is ignored


def validate_answer(
    verdict: dict[str, Any], *, markdown: bool, views: Collection[str] = (), mthds_contents: list[str] | None = None
) -> dict[str, Any]:
    """Engine.validate's verdict -> the protocol's ValidationResult (discriminated on is_valid), as the official server
    answers it: members with no value are absent; `input_form` and `output_form` only when `views` names them,
    `rendered_markdown` only when `markdown` is asked for; `mthds_contents` echoes the contents validated."""
    if verdict.get("fault") and verdict.get("problem"):
        # no verdict on the method (the runtime's validator failed otherwise than by refusing it): its problem, as the
        # official server answers it
        raise ApiProblem.from_document(verdict["problem"])
    message = str(verdict.get("message") or "")
    report = verdict.get("protocol_report") or {}
    if verdict.get("success"):
        answer: dict[str, Any] = {
            "is_valid": True,
            "bundle_blueprint": verdict.get("pipelex_bundle_blueprint") or {},
            "pipe_io_contracts": report.get("pipe_io_contracts") or {},
            "liftable_pipes": report.get("liftable_pipes") or [],
            "tree_files_read": report.get("tree_files_read") or {},
            "tree_file_readers": report.get("tree_file_readers") or {},
            "graph_spec": verdict.get("graph_spec"),
            "validated_pipes": verdict.get("validated_pipes") or [],
            "pending_signatures": verdict.get("pending_signatures") or [],
            "is_runnable": bool(verdict.get("is_runnable", True)),
            "message": message,
            "warnings": [item for item in map(protocol_item, report.get("warnings") or []) if item],
            "mthds_contents": mthds_contents,
            "default_pipe_ref": report.get("default_pipe_ref"),
            "pipe_structures": verdict.get("pipe_structures") or {},
        }
        for view in VALIDATION_VIEWS:
            if view in views:
                answer[view] = report.get(view) or {}
        if markdown:
            answer["rendered_markdown"] = report.get("rendered_markdown") or f"# Validation passed\n\n{message}"
        return {key: value for key, value in answer.items() if value is not None}
    errors = [item for item in map(protocol_item, report.get("errors") or verdict.get("errors") or []) if item]
    if not errors:
        errors = [{"code": "method.invalid", "detail": message or "The method does not validate."}]
    answer = {"is_valid": False, "errors": errors, "pending_signatures": [], "is_runnable": False, "message": message}
    if markdown:
        lines = "\n".join(f"- `{item['code']}`: {item['detail']}" for item in errors)
        answer["rendered_markdown"] = report.get("rendered_markdown") or f"# Validation failed\n\n{message}\n\n{lines}"
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
    """The deck, or one category of it as the official server narrows it: its models, and the aliases and waterfalls
    keyed by that category (the other categories' maps are left out, not emptied)."""
    if category is None:
        return deck
    wanted = category.value

    def narrowed(by_category: Any) -> Any:
        return {name: value for name, value in by_category.items() if name == wanted} if isinstance(by_category, dict) else by_category

    return {
        **deck,
        "models": [model for model in deck.get("models") or [] if model.get("type") == wanted],
        **{member: narrowed(deck[member]) for member in ("aliases", "waterfalls") if member in deck},
    }


def version_answer(
    *, implementation_version: str, versions: dict[str, str], method_tree_limits: dict[str, int] | None = None
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "protocol_version": versions["protocol_version"],
        "runner_version": implementation_version,
        "blob_store": True,  # POST /v1/blobs/missing and PUT /v1/blobs/{sha256} (api/routes/blobs.py)
        "implementation": IMPLEMENTATION,
        "implementation_version": implementation_version,
        "runtime_version": versions["runtime_version"],
    }
    if method_tree_limits is not None:
        # the SDKs list a tree under these before sending it (pipelex_sdk reads limits.method_tree.max_files, ...)
        answer["limits"] = {"method_tree": method_tree_limits}
    return answer
