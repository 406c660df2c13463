"""The run records the SDK reads: ``GET /v1/runs`` (a method's history: time range, statuses in the SDK's
vocabulary, signed cursors) and ``GET /v1/runs/{id}`` (one run with what it executed)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pipelex_server.api.protocol.platform_problems import platform_problem
from pipelex_server.api.protocol.problems import protocol_problem
from pipelex_server.files.cursors import Cursors
from pipelex_server.files.run_files import run_not_found
from pipelex_server.files.service import instant, invalid
from pipelex_server.runs.documents import iso
from pipelex_server.runs.model import Caller
from pipelex_server.runs.progress import protocol_status
from pipelex_server.store.run_history import RunHistoryRepository
from pipelex_server.store.runs import RunRepository

# The SDK's statuses -> the run states that may hold them (TIMED_OUT and FAILED share FAILED; checked per row).
STATES_OF_STATUS: dict[str, tuple[str, ...]] = {
    "PENDING": ("STARTED",),
    "STARTED": ("STARTED",),
    "RUNNING": ("RUNNING",),
    "COMPLETED": ("COMPLETED",),
    "FAILED": ("FAILED",),
    "TIMED_OUT": ("FAILED",),
    "CANCELLED": ("CANCELLED",),
    "TERMINATED": ("ERROR",),
}
_BARE_METHOD_ID = re.compile(r"^mt_[A-Za-z0-9_-]{1,120}$")


def _method_version(value: Any) -> int | str | None:
    if value is None or value == "draft":
        return value
    text = str(value)
    return int(text) if text.isdecimal() else None


def _problem(document: dict[str, Any] | None) -> dict[str, Any] | None:
    completed = protocol_problem(document)
    return {key: value for key, value in completed.items() if value is not None} if completed else None


def history_item(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "pipeline_run_id": row["public_id"],
        "status": protocol_status(row["state"], row["error"]),
        "created_at": iso(row["created_at"]),
        "finished_at": iso(row["finished_at"]),
        "pipe_code": row["pipe_code"],
        "error": _problem(row["error"]),
        "method_version": _method_version(row.get("method_version")),
        "source_digest": None,
    }


def run_detail(row: dict[str, Any]) -> dict[str, Any]:
    request = row.get("request") or {}
    return {
        **history_item(row),
        "method_id": row.get("method_id"),
        "org_id": row["caller_id"],
        "created_by_user_id": row["caller_id"],
        "workflow_id": row["workflow_id"],
        "result_url": row["output_url"],
        "mthds_contents": request.get("mthds_contents"),
        "inputs": request.get("inputs"),
        "request_id": None,
        "tree_digest": request.get("tree_digest"),
        "crate_fingerprint": row.get("crate_fingerprint"),
    }


class RunHistory:
    def __init__(self, *, repository: RunHistoryRepository, runs: RunRepository, cursors: Cursors) -> None:
        self.repository = repository
        self.runs = runs
        self.cursors = cursors

    async def list(
        self,
        *,
        caller: Caller,
        method_id: str | None,
        created_from: str | None,
        created_to: str | None,
        created_by: str | None,
        statuses: list[str],
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        if method_id is not None and not _BARE_METHOD_ID.match(method_id):
            raise platform_problem(
                "request.invalid",
                status=400,
                detail="'method_id' is a bare catalog id (mt_…): a run history holds every version, so it takes no @ suffix.",
                params={"field": "method_id"},
            )
        unknown = [status for status in statuses if status not in STATES_OF_STATUS]
        if unknown:
            raise invalid(f"'status' is one of {', '.join(STATES_OF_STATUS)}, not {unknown[0]!r}.", "status")
        if created_by not in (None, "me"):
            raise invalid("'created_by' takes only 'me'.", "created_by")
        start, end = instant(created_from, "created_from"), instant(created_to, "created_to")
        if start and end and start > end:
            raise invalid("'created_from' is after 'created_to'.", "created_from", status=400)
        wanted = sorted(set(statuses))
        filters = {"method_id": method_id, "from": created_from, "to": created_to, "by": created_by, "status": wanted}
        after = None
        if cursor is not None:
            created_at, run_key = self.cursors.read(cursor, caller_id=caller.id, list_id="runs", filters=filters)
            after = (datetime.fromisoformat(created_at), run_key)
        states = sorted({state for status in wanted for state in STATES_OF_STATUS[status]}) if wanted else None
        rows, more = await self.repository.page(
            caller_id=caller.id, method_id=method_id, states=states, created_from=start, created_to=end, limit=limit, after=after
        )
        next_cursor = None
        if more and rows:
            position = [rows[-1]["created_at"].isoformat(), rows[-1]["id"]]
            next_cursor = self.cursors.issue(caller_id=caller.id, list_id="runs", filters=filters, position=position)
        items = [history_item(row) for row in rows]
        if wanted:  # FAILED and TIMED_OUT share a state: the exact status is checked per row (a page may hold fewer)
            items = [item for item in items if item["status"] in wanted or (item["status"] == "PENDING" and "STARTED" in wanted)]
        return {"items": items, "next_cursor": next_cursor}

    async def detail(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self.runs.get_public(caller.id, run_id)
        if row is None:
            raise run_not_found(run_id)
        return run_detail(row)
