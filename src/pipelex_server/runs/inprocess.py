"""In-process execution: runs execute as tasks of this process, at most MAX_CONCURRENT_RUNS at once, each under a
lease this process renews; callbacks are delivered from here; at shutdown the runs still going are handed back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from pipelex_server.engine.runtime import Engine
from pipelex_server.runs.callbacks import CallbackDeliverer
from pipelex_server.runs.documents import cancelled_problem
from pipelex_server.runs.events import RunEvents
from pipelex_server.runs.execution import RunExecution
from pipelex_server.runs.lifecycle import RunLifecycle
from pipelex_server.runs.maintenance import LeaseKeeper
from pipelex_server.runs.model import Caller, RunRequest
from pipelex_server.runs.priority import AckPriority
from pipelex_server.settings import Settings
from pipelex_server.store.common import lease_deadline
from pipelex_server.store.runs import RunRepository

CANCEL_TASK_WAIT_SECONDS = 10


class InProcessExecutor:
    def __init__(
        self,
        *,
        settings: Settings,
        repository: RunRepository,
        events: RunEvents,
        lifecycle: RunLifecycle,
        execution: RunExecution,
        deliverer: CallbackDeliverer,
        engine: Engine,
        acks: AckPriority | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.events = events
        self.lifecycle = lifecycle
        self.execution = execution
        self.deliverer = deliverer
        self.acks = acks or AckPriority(0)
        self.running: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self.leases = LeaseKeeper(
            settings=settings, repository=repository, lifecycle=lifecycle, engine=engine, running=self.running, requeue=self.requeue
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self._background: list[asyncio.Task[None]] = []
        self._shutting_down = False

    def start(self) -> None:
        self.deliverer.start()
        self._background = self.leases.start()

    async def close(self, grace_seconds: float) -> None:
        """Graceful stop: let running runs finish within the grace period; hand back the rest (re-queued)."""
        pending = [task for task in self.running.values() if not task.done()]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace_seconds)
            self._shutting_down = True
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=10)
        self._shutting_down = True
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---------------------------------------------------------------- creation

    async def claim_slot(self) -> bool:
        if self._slots.locked():
            return False
        await self._slots.acquire()  # a free slot: no suspension
        return True

    def release_slot(self) -> None:
        self._slots.release()

    def placement(self, key: str) -> dict[str, Any]:
        return {
            "lease_owner": self.lifecycle.instance_id,
            "lease_expires_at": lease_deadline(self.settings.lease_seconds),
            "workflow_id": None,
        }

    def adopt(self, key: str, *, next_seq: int, public_id: str) -> None:
        self.events.open(key, next_seq=next_seq, public_id=public_id)

    async def prepare_execute(
        self, run_id: str | None, request: RunRequest, check: Callable[[str], Awaitable[RunRequest]]
    ) -> tuple[str | None, RunRequest]:
        # the run executes here, and resolves its inputs as it goes
        return run_id, request

    # ---------------------------------------------------------------- execution

    async def submit(self, row: dict[str, Any], *, created: bool, caller: Caller, request: RunRequest, request_id: str | None) -> None:
        if created:  # a replayed run executes (or executed) where it was created
            self._spawn(row, caller, request, request_id)

    async def wait(self, row: dict[str, Any]) -> dict[str, Any]:
        task = self.running.get(row["id"])
        # shield: a client that disconnects does not cancel the run; it goes on and is recorded.
        return await asyncio.shield(task) if task is not None else await self.lifecycle.wait_ended(row)

    async def requeue(self, run_id: str) -> None:
        """Run a queued run this process took over (its owner's lease expired)."""
        row = await self.repository.get(run_id)
        if row is None or row["state"] != "STARTED" or self._shutting_down:
            return
        await self.lifecycle.open_events(row)
        self._spawn({**row, "_slot": False}, Caller(id=row["caller_id"]), RunRequest.from_json(row["request"]), None)

    def _spawn(self, row: dict[str, Any], caller: Caller, request: RunRequest, request_id: str | None) -> asyncio.Task[dict[str, Any]]:
        run_id = row["id"]
        task = asyncio.create_task(self._run(row, caller, request, request_id), name=f"run-{run_id}")
        self.running[run_id] = task
        task.add_done_callback(lambda _task: self.running.pop(run_id, None))
        return task

    async def _run(self, row: dict[str, Any], caller: Caller, request: RunRequest, request_id: str | None) -> dict[str, Any]:
        run_id = row["id"]
        holds_slot = bool(row.get("_slot"))
        try:
            if not holds_slot:
                if row.get("kind") == "start":
                    # a run its client is not waiting on lets the acks pending now go first (bounded: never starved)
                    await self.acks.yield_to_acks()
                await self._slots.acquire()
                holds_slot = True
                running = await self.lifecycle.start(row)
                if running is None:  # cancelled (or settled) while it waited for a slot
                    return await self.repository.get(run_id) or row
                row = running
            values = await self.execution.run(row, caller, request, request_id)
        except asyncio.CancelledError:
            if self._shutting_down:
                await self.lifecycle.hand_back(run_id)
                raise
            # cancelled by its caller: the run ends CANCELLED and the task returns it (waiters get the run, not an error)
            values = {"state": "CANCELLED", "error": cancelled_problem()}
        finally:
            if holds_slot:
                self._slots.release()
        return await self.lifecycle.finish(row, values)

    # ---------------------------------------------------------------- cancel, callbacks, health

    async def cancel(self, row: dict[str, Any]) -> None:
        task = self.running.get(row["id"])
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), CANCEL_TASK_WAIT_SECONDS)
        elif row["state"] == "STARTED" and await self.lifecycle.cancel_queued(row):
            pass
        else:
            await self.repository.request_cancel(row["id"])  # executing in another process: it polls for this

    async def redeliver(self, row: dict[str, Any]) -> None:
        self.deliverer.wake()

    async def health(self) -> dict[str, str]:
        return {}
