"""Runtime results -> the JSON the server answers with."""

from __future__ import annotations

from typing import Any

from pipelex.reporting.usage_records import dump_tokens_usage_records

from pipelex_server.engine.problems import problem_from_exception
from pipelex_server.engine.types import RunOutcome
from pipelex_server.engine.validation_views import invalid_views, valid_views


def shape_usage(records: list[dict[str, Any]] | None) -> dict[str, Any]:
    tokens: dict[str, int] = {}
    cost: float | None = 0.0
    for record in records or []:
        for category, count in (record.get("nb_tokens_by_category") or {}).items():
            tokens[category] = tokens.get(category, 0) + int(count)
        if record.get("cost") is None:
            cost = None
        elif cost is not None:
            cost += float(record["cost"])
    return {"tokens": tokens, "cost_usd": cost, "by_pipe": records or []}


def shape_outcome(result: Any) -> RunOutcome:
    """The runtime's execute result -> our outcome: the working memory as the runtime dumps it (its values, aliases and
    recorded absences), the usage records, and the fingerprint of the crate the run was built from."""
    pipe_output = result.pipe_output
    memory = pipe_output.working_memory.model_dump(mode="json", serialize_as_any=True, by_alias=True)
    working_memory = {"root": memory.get("root", {}), "aliases": memory.get("aliases", {}), "absences": memory.get("absences", {})}
    return RunOutcome(
        main_stuff_name=result.main_stuff_name,
        pipe_output={"working_memory": working_memory},
        usage=shape_usage(dump_tokens_usage_records(pipe_output.tokens_usages)),
        crate_fingerprint=getattr(result, "crate_fingerprint", None),
    )


def _pipe_structures(report: dict[str, Any]) -> dict[str, Any]:
    structures: dict[str, Any] = {}
    for pipe_ref, contract in (report.get("pipe_io_contracts") or {}).items():
        inputs = {
            name: {
                "concept_code": spec.get("concept_ref"),
                "multiplicity": spec.get("multiplicity"),
                "json_schema": spec.get("json_schema"),
            }
            for name, spec in (contract.get("inputs") or {}).items()
        }
        output = contract.get("output") or {}
        structures[pipe_ref] = {
            "inputs": inputs,
            "output": {
                "concept_code": output.get("concept_ref"),
                "multiplicity": output.get("multiplicity"),
                "json_schema": output.get("json_schema"),
            },
        }
    return structures


def shape_validation(report: Any, *, pipe_code: str | None, entry_pipe_ref: str | None = None) -> dict[str, Any]:
    """The runtime's report -> our verdict; `protocol_report` holds what only /v1/validate answers.

    `entry_pipe_ref`: a method tree's entry pipe (its default_pipe_ref), which the primary blueprint cannot tell."""
    dump = report.model_dump(mode="json", serialize_as_any=True, by_alias=True)
    structures = _pipe_structures(dump)
    if pipe_code:
        structures = {ref: value for ref, value in structures.items() if ref == pipe_code or ref.endswith("." + pipe_code)}
        if not structures:
            detail = f"The bundle declares no pipe {pipe_code!r}."
            return {
                "success": False,
                "message": detail,
                "errors": [{"code": "request.pipe_not_found", "detail": detail, "location": None}],
                "pipelex_bundle_blueprint": dump.get("bundle_blueprint"),
                "pipe_structures": {},
                "graph_spec": None,
                "protocol_report": invalid_views([{"code": "request.pipe_not_found", "detail": detail}], detail),
            }
    runnable = bool(dump.get("is_runnable", True))
    return {
        "success": bool(dump.get("is_valid", True)),
        "message": "The bundle is valid." if runnable else "The bundle is valid but has unimplemented pipe signatures.",
        "errors": [],
        "warnings": dump.get("warnings") or [],
        "pipelex_bundle_blueprint": dump.get("bundle_blueprint"),
        "pipe_structures": structures,
        "graph_spec": dump.get("graph_spec"),
        "validated_pipes": dump.get("validated_pipes") or [],
        "pending_signatures": dump.get("pending_signatures") or [],
        "is_runnable": runnable,
        "protocol_report": valid_views(report, dump, entry_pipe_ref=entry_pipe_ref),
    }


def shape_validation_failure(exc: BaseException) -> dict[str, Any]:
    """A validation that raised -> an invalid verdict. `fault` marks the failures that are no verdict on the method, as
    the runtime's own validator tells them apart: anything but its invalid-bundle error, answered with a 5xx (say, no
    document engine for a template step's format). /v1/validate answers those as their problem, as the official server
    does; /api/v1/validate keeps them as an invalid verdict carrying the problem."""
    from pipelex.pipeline.exceptions import ValidateBundleError

    problem = problem_from_exception(exc, request_id=None)
    document = problem.to_document(request_id=None)
    document.pop("request_id", None)
    fault = problem.status >= 500 and not isinstance(exc, ValidateBundleError)
    items = document.get("errors") or [{"code": document["code"], "detail": document["detail"], "location": document.get("location")}]
    errors = [{"code": item.get("code"), "detail": item.get("detail"), "location": item.get("location")} for item in items]
    return {
        "success": False,
        "message": document["detail"],
        "errors": errors,
        "problem": document,
        "pipelex_bundle_blueprint": None,
        "pipe_structures": {},
        "graph_spec": None,
        "protocol_report": invalid_views(items, document["detail"]),
        **({"fault": True} if fault else {}),
    }
