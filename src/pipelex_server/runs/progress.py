"""A run in the MTHDS SDK's words: its status, and its progress snapshot projected from its event log.

Pure: no I/O. A pipe failure is recorded as a bare problem; the /v1 routes complete it for protocol readers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pipelex_server.errors import MTHDS_TYPE_BASE

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

# The controllers whose children a progress path nests, and the segment each child gets.
_CHILD_SEGMENT = {"PipeSequence": "step", "PipeParallel": "branch", "PipeBatch": "item", "PipeCondition": "outcome"}


def protocol_status(state: str, error: dict[str, Any] | None = None) -> str:
    if state == "FAILED" and (error or {}).get("code") == "run.timed_out":
        return "TIMED_OUT"
    return STATUS_OF_STATE[state]


def _iso_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def progress_snapshot(document: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
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
                invocation["last_failure"] = {"problem": problem, "at": data.get("at")}
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
