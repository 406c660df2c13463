"""The public views of a run (contract §4): the run document, the /execute and /start answers, the problems a run
ends with, the not-found problem.

They name a run by its public id (``pipeline_run_id``), never by the server-wide key it is stored under.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelex_server.errors import ApiProblem
from pipelex_server.runs.callbacks import delivery_record

if TYPE_CHECKING:
    from pipelex_server.store.deliveries import DeliveryRepository
    from pipelex_server.store.runs import RunRepository


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _provenance(row: dict[str, Any]) -> dict[str, Any]:
    """A method_ref run's provenance (the package's address, tag, commit, tree digest and display name), when it has one."""
    request = row.get("request")
    provenance = request.get("method_provenance") if isinstance(request, dict) else None
    found = {"method_provenance": provenance} if provenance else {}
    if row.get("method_id"):  # a run of a catalog method (`method_id`): which one, and which version ("3", "draft")
        found.update(method_id=row["method_id"], method_version=row.get("method_version"))
    return found


def run_document(row: dict[str, Any], deliveries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The public view of a run (contract §4)."""
    return {
        "pipeline_run_id": row["public_id"],
        "pipeline_state": row["state"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "pipe_code": row["pipe_code"],
        "main_stuff_name": row["main_stuff_name"],
        "pipe_output": row["output"] if row["state"] == "COMPLETED" else None,
        "output_url": row["output_url"],
        "error": row["error"],
        "usage": row["usage"],
        "dry_run": bool(row["dry_run"]),
        "workflow_id": row["workflow_id"],
        "callbacks": [delivery_record(delivery) for delivery in deliveries or []],
        **_provenance(row),
    }


async def stored_run_document(runs: RunRepository, deliveries: DeliveryRepository, key: str) -> dict[str, Any] | None:
    """The run document of the run stored under ``key`` (what its callbacks send); None when it is gone.

    A callback body also carries ``state`` as the official server's completion callbacks say it: ``COMPLETED``, or
    ``FAILED`` for every other ending (``pipeline_state`` keeps the exact one)."""
    row = await runs.get(key)
    if not row:
        return None
    document = run_document(row, await deliveries.deliveries_of(key))
    document["state"] = "COMPLETED" if row["state"] == "COMPLETED" else "FAILED"
    return document


def execute_answer(row: dict[str, Any]) -> dict[str, Any]:
    """The body of a 200 from /execute: the completed run, in the seed's response shape."""
    return {
        "pipeline_run_id": row["public_id"],
        "created_at": iso(row["created_at"]),
        "pipeline_state": row["state"],
        "finished_at": iso(row["finished_at"]),
        "main_stuff_name": row["main_stuff_name"],
        "pipe_output": row["output"],
        "output_url": row["output_url"],
        "usage": row["usage"],
        "dry_run": bool(row["dry_run"]),
        "crate_fingerprint": row.get("crate_fingerprint"),
        **_provenance(row),
    }


def start_answer(row: dict[str, Any]) -> dict[str, Any]:
    """The body of a 202 from /start."""
    return {
        "pipeline_run_id": row["public_id"],
        "created_at": iso(row["created_at"]),
        "pipeline_state": row["state"],
        "finished_at": iso(row["finished_at"]),
        "main_stuff_name": row["main_stuff_name"],
        "pipe_output": row["output"] if row["state"] == "COMPLETED" else None,
        "workflow_id": row["workflow_id"],
        "crate_fingerprint": row.get("crate_fingerprint"),
        **_provenance(row),
    }


def not_found(run_id: str) -> ApiProblem:
    """The answer for an id the caller has no run of: the same whether no one has it or another caller does."""
    return ApiProblem(status=404, code="run.not_found", detail=f"No run {run_id!r}.", params={"pipeline_run_id": run_id})


def problem_document(status: int, code: str, detail: str) -> dict[str, Any]:
    """A problem as a run records it (no request id: the run outlives the request)."""
    return ApiProblem(status=status, code=code, detail=detail).to_document(request_id=None)


def cancelled_problem() -> dict[str, Any]:
    return problem_document(409, "run.cancelled", "The run was cancelled by its caller.")
