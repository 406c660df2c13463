"""What the routes call about runs: start, execute, read, follow, cancel, delete, redeliver; each delegating to the
rooms of the runs package (admission, lifecycle, the execution mode's executor, maintenance, attempts)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any

from pipelex_server.errors import ApiProblem
from pipelex_server.runs.admission import Admission
from pipelex_server.runs.attempts import RunAttempts
from pipelex_server.runs.callbacks import CallbackDeliverer
from pipelex_server.runs.documents import execute_answer, not_found, problem_document, run_document, start_answer
from pipelex_server.runs.events import RunEvents
from pipelex_server.runs.executor import Executor
from pipelex_server.runs.lifecycle import RunLifecycle
from pipelex_server.runs.limits import StreamSlots, redelivery_limit
from pipelex_server.runs.maintenance import RetentionPurge
from pipelex_server.runs.model import Caller, RunRequest
from pipelex_server.runs.priority import AckPriority
from pipelex_server.runs.stored import delete_stored, output_bytes
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectStore
from pipelex_server.store.common import TERMINAL_STATES, Event, InvalidCursor, utcnow
from pipelex_server.store.deliveries import DeliveryRepository
from pipelex_server.store.runs import RunRepository


class RunService:
    def __init__(
        self,
        *,
        settings: Settings,
        repository: RunRepository,
        deliveries: DeliveryRepository,
        store: ObjectStore,
        events: RunEvents,
        lifecycle: RunLifecycle,
        admission: Admission,
        executor: Executor,
        retention: RetentionPurge,
        attempts: RunAttempts,
        deliverer: CallbackDeliverer,
        acks: AckPriority | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.deliveries = deliveries
        self.store = store
        self.events = events
        self.lifecycle = lifecycle
        self.admission = admission
        self.executor = executor
        self.retention = retention
        self.attempts = attempts  # what a Temporal worker's activities call
        self.deliverer = deliverer
        self.acks = acks or AckPriority(0)
        self.streams = StreamSlots(settings.sse_max_streams_per_caller)
        self._background: list[asyncio.Task[None]] = []

    # ---------------------------------------------------------------- background work

    def start_background(self, *, retention: bool = True) -> None:
        self.events.start()
        self.executor.start()
        if retention and self.settings.run_retention_days:
            self._background = [self.retention.start()]

    async def close(self, grace_seconds: float = 20.0) -> None:
        """Graceful stop: runs executing here get the grace period to finish (the rest are handed back)."""
        await self.executor.close(grace_seconds)
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.events.close()
        await self.deliverer.close()

    async def store_health(self) -> str:
        """The run store's readiness: "ok", or why not."""
        try:
            await self.repository.ping()
        except Exception as exc:
            return f"failing: {type(exc).__name__}"
        return "ok"

    async def executor_health(self) -> dict[str, str]:
        """The execution mode's own readiness checks (Temporal's, in Temporal mode)."""
        return await self.executor.health()

    # ---------------------------------------------------------------- execute / start

    async def execute(self, *, caller: Caller, request: RunRequest, run_id: str | None, request_id: str | None) -> dict[str, Any]:
        """Run and wait. Returns the execute answer of a COMPLETED run, or raises the run's problem."""
        row, created, request = await self.admission.for_execute(caller=caller, request=request, run_id=run_id, request_id=request_id)
        if row["state"] not in TERMINAL_STATES:
            await self.executor.submit(row, created=created, caller=caller, request=request, request_id=request_id)
            row = await self.executor.wait(row)
        if row["state"] == "COMPLETED":
            if row["output"] is None and row["output_url"]:
                # /execute waits for the result: it gets the whole output even when the run document links it
                row = {**row, "output": json.loads(await output_bytes(self.store, row))}
            return execute_answer(row)
        problem = ApiProblem.from_document(row["error"] or problem_document(500, "run.lost", "The run ended without a result."))
        problem.members["pipeline_run_id"] = row["public_id"]
        problem.members["pipeline_state"] = row["state"]
        raise problem

    async def start(self, *, caller: Caller, request: RunRequest, run_id: str | None, request_id: str | None) -> dict[str, Any]:
        """Check the bundle and inputs now (422 at once), then run in the background. Returns the 202 body."""
        with self.acks.acknowledging():  # runs not started yet wait for it (runs/priority.py)
            row, created, stored = await self.admission.for_start(caller=caller, request=request, run_id=run_id, request_id=request_id)
            if row["state"] not in TERMINAL_STATES:
                await self.executor.submit(row, created=created, caller=caller, request=stored, request_id=request_id)
        return start_answer(row)

    # ---------------------------------------------------------------- reads

    async def _owned(self, caller: Caller, run_id: str) -> dict[str, Any]:
        """The caller's run of public id ``run_id``; 404 alike for an id no one uses and for another caller's."""
        row = await self.repository.get_public(caller.id, run_id)
        if row is None:
            raise not_found(run_id)
        return row

    async def get_document(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self._owned(caller, run_id)
        return run_document(row, await self.deliveries.deliveries_of(row["id"]))

    async def document_and_events(self, *, caller: Caller, run_id: str) -> tuple[dict[str, Any], list[Event]]:
        """The caller's run document and every event of the run so far (the /v1 progress snapshot)."""
        row = await self._owned(caller, run_id)
        events: list[Event] = []
        while page := await self.repository.events_after(row["id"], events[-1]["seq"] if events else 0):
            events += page
        return run_document(row, await self.deliveries.deliveries_of(row["id"])), events

    async def list_documents(
        self, *, caller: Caller, state: str | None, pipe_code: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        try:
            rows, next_cursor = await self.repository.list_runs(
                caller_id=caller.id, state=state, pipe_code=pipe_code, limit=limit, cursor=cursor
            )
        except InvalidCursor as exc:
            raise ApiProblem(status=422, code="request.invalid", detail="The cursor is not one this server gave.") from exc
        deliveries = await self.deliveries.deliveries_of_runs([row["id"] for row in rows])
        return {"runs": [run_document(row, deliveries.get(row["id"], [])) for row in rows], "next_cursor": next_cursor}

    async def follow_events(self, *, caller: Caller, run_id: str, after_seq: int) -> AsyncGenerator[Event | None, None]:
        """The caller's run's events after ``after_seq`` (404 first when it has no such run), holding one of its
        SSE_MAX_STREAMS_PER_CALLER stream slots (429 when none is free) until the stream ends or is dropped."""
        row = await self._owned(caller, run_id)
        return self.streams.hold(caller.id, self.events.follow(row["id"], after_seq, caller_id=caller.id))

    async def output(self, *, caller: Caller, run_id: str) -> bytes:
        row = await self._owned(caller, run_id)
        if row["state"] != "COMPLETED":
            raise ApiProblem(
                status=409,
                code="run.not_completed",
                detail=f"The run has no output: it is {row['state']}.",
                params={"pipeline_run_id": row["public_id"], "pipeline_state": row["state"]},
            )
        return await output_bytes(self.store, row)

    # ---------------------------------------------------------------- cancel / delete / redeliver

    async def cancel(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self._owned(caller, run_id)
        if row["state"] in TERMINAL_STATES:
            raise ApiProblem(
                status=409,
                code="run.already_ended",
                detail=f"The run already ended ({row['state']}).",
                params={"pipeline_run_id": run_id, "pipeline_state": row["state"]},
            )
        await self.executor.cancel(row)
        return await self.get_document(caller=caller, run_id=run_id)

    async def delete(self, *, caller: Caller, run_id: str) -> None:
        row = await self._owned(caller, run_id)
        if row["state"] not in TERMINAL_STATES or not await self.repository.delete_terminal(row["id"]):
            raise ApiProblem(
                status=409,
                code="run.not_terminal",
                detail="The run is still going; cancel it first, or wait for it to end.",
                params={"pipeline_run_id": run_id, "pipeline_state": row["state"]},
            )
        self.events.notify(row["id"])  # its readers here see it gone at once
        await delete_stored(self.store, row["caller_id"], run_id)

    async def redeliver(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        """Send the run's callbacks again, each with a fresh budget of attempts: at most CALLBACK_MAX_REDELIVERIES
        times per run, counted in the store."""
        row = await self._owned(caller, run_id)
        if row["state"] not in TERMINAL_STATES:
            raise ApiProblem(status=409, code="run.not_terminal", detail="The run has not ended: there is nothing to deliver yet.")
        limit = self.settings.callback_max_redeliveries
        scheduled = await self.deliveries.grant_redelivery(
            row["id"], utcnow(), extra_attempts=self.settings.callback_max_attempts, max_redeliveries=limit
        )
        if scheduled is None:
            raise redelivery_limit(limit)
        if not scheduled:
            raise ApiProblem(status=409, code="callback.none", detail="The run has no callback_urls.")
        await self.executor.redeliver(row)
        return await self.get_document(caller=caller, run_id=run_id)
