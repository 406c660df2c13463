"""The worker's side of Temporal mode: execute the run an activity was given, settle a run its workflow could not
finish, deliver a run's callbacks. A run executes as an in-process one does (runs/execution.py) and is written by
the one writer of run state (runs/lifecycle.py), so both are recorded alike (same states, events, usage, outputs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pipelex_server.engine.types import Checkpoints
from pipelex_server.runs.callbacks import CallbackDeliverer
from pipelex_server.runs.documents import cancelled_problem, problem_document
from pipelex_server.runs.events import RunEvents
from pipelex_server.runs.execution import RunExecution
from pipelex_server.runs.lifecycle import RunLifecycle
from pipelex_server.runs.model import Caller, RetryableRunFailure, RunRequest, is_retryable
from pipelex_server.settings import Settings
from pipelex_server.store.checkpoints import CheckpointRepository
from pipelex_server.store.common import TERMINAL_STATES, utcnow
from pipelex_server.store.deliveries import DeliveryRepository
from pipelex_server.store.runs import RunRepository


class RunAttempts:
    def __init__(
        self,
        *,
        settings: Settings,
        repository: RunRepository,
        deliveries: DeliveryRepository,
        checkpoints: CheckpointRepository,
        events: RunEvents,
        lifecycle: RunLifecycle,
        execution: RunExecution,
        deliverer: CallbackDeliverer,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.deliveries = deliveries
        self.checkpoints = checkpoints
        self.events = events
        self.lifecycle = lifecycle
        self.execution = execution
        self.deliverer = deliverer

    async def _flush_and_close(self, run_id: str, *extra: tuple[str, dict[str, Any]]) -> None:
        """Write the run's buffered events (and ``extra``) and stop tracking it here: another attempt takes it on."""
        for event, data in extra:
            self.events.buffer(run_id, event, data)
        await self.events.flush(run_id)
        self.events.close_run(run_id)

    async def execute_assigned(self, run_id: str, *, attempt: int, max_attempts: int, worker_shutdown: Callable[[], bool]) -> str:
        """Execute a run a Temporal activity was given (``run_id`` is its key); returns its terminal state.

        Idempotent: a run already ended is left alone. A retried attempt takes the run over and skips the steps
        an earlier attempt checkpointed, within what is left of the run's time limit (counted from its first start).
        Raises ``RetryableRunFailure`` (the run stays RUNNING) for a failure another attempt may fix, while attempts
        remain; re-raises a cancellation (after ending the run CANCELLED, unless the worker is shutting down, in which
        case the run stays RUNNING for the next attempt)."""
        row = await self.repository.get(run_id)
        if row is None:
            return "GONE"
        if row["state"] in TERMINAL_STATES:
            return row["state"]
        await self.lifecycle.open_events(row)
        now = utcnow()
        running = {"pipeline_state": "RUNNING", "attempt": attempt, "worker": self.lifecycle.instance_id}
        if row["state"] == "STARTED":
            if not await self.lifecycle.start_attempt(run_id, now, running):
                self.events.close_run(run_id)
                current = await self.repository.get(run_id)
                if current is None or current["state"] in TERMINAL_STATES:
                    return current["state"] if current else "GONE"
                await self.lifecycle.open_events(current)
            else:
                row = {**row, "state": "RUNNING", "started_at": now}
        else:  # RUNNING: an earlier attempt was lost (worker killed) or gave up for a retry
            await self.lifecycle.take_over(run_id, running)
        self.events.notify(run_id)
        limit = self.settings.run_timeout_seconds
        remaining = limit - (now - (row["started_at"] or now)).total_seconds()
        if remaining <= 0:
            problem = problem_document(422, "run.timed_out", f"The run passed its time limit of {limit:g} s (RUN_TIMEOUT_SECONDS).")
            return (await self.lifecycle.finish(row, {"state": "FAILED", "error": problem}))["state"]
        saved = {key: checkpoint["data"] for key, checkpoint in (await self.checkpoints.of_run(run_id)).items()}

        async def save(key: str, pipe_code: str, data: dict[str, Any]) -> None:
            await self.checkpoints.put(run_id, key, pipe_code, data)

        request = RunRequest.from_json(row["request"])
        caller = Caller(id=row["caller_id"])
        try:
            checkpoints = Checkpoints(saved=saved, save=save)
            values = await self.execution.run(row, caller, request, None, checkpoints=checkpoints, remaining_seconds=remaining)
        except asyncio.CancelledError:
            if worker_shutdown():
                await self._flush_and_close(run_id)
                raise
            await asyncio.shield(self.lifecycle.finish(row, {"state": "CANCELLED", "error": cancelled_problem()}))
            raise
        if values["state"] == "FAILED" and attempt < max_attempts and is_retryable(values.get("error")):
            error = values["error"]
            await self._flush_and_close(
                run_id,
                (
                    "state",
                    {"pipeline_state": "RUNNING", "retrying": True, "error": {"code": error.get("code"), "detail": error.get("detail")}},
                ),
            )
            raise RetryableRunFailure(error)
        final = await self.lifecycle.finish(row, values)
        return final["state"]

    async def settle_assigned(self, run_id: str, *, reason: str, detail: str) -> str:
        """End a run its workflow could not finish (cancelled before it started, attempts exhausted, timed out)."""
        row = await self.repository.get(run_id)
        if row is None:
            return "GONE"
        if row["state"] in TERMINAL_STATES:
            return row["state"]
        await self.lifecycle.open_events(row)
        if reason == "cancelled":
            values = {"state": "CANCELLED", "error": cancelled_problem()}
        elif reason == "timed_out":
            problem = problem_document(422, "run.timed_out", f"The run passed its time limit without finishing ({detail}).")
            values = {"state": "FAILED", "error": problem}
        else:
            problem = problem_document(500, "run.lost", f"The run could not be completed by any attempt: {detail}")
            values = {"state": "ERROR", "error": problem}
        return (await self.lifecycle.finish(row, values))["state"]

    async def deliver_assigned(self, run_id: str) -> int:
        """One delivery attempt of each of the run's undelivered callbacks; returns how many still need one."""
        await self.deliveries.schedule_deliveries(run_id, utcnow())
        return await self.deliverer.deliver_run(run_id)
