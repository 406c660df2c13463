"""Temporal execution, the API's side: a run is submitted as a workflow that workers execute (runs/attempts.py),
cancelled through it, its callbacks redelivered by a workflow of their own; this process keeps nothing per run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from pipelex_server.errors import ApiProblem
from pipelex_server.runs.documents import problem_document
from pipelex_server.runs.ids import new_public_id
from pipelex_server.runs.lifecycle import RunLifecycle
from pipelex_server.runs.model import Caller, RunRequest
from pipelex_server.settings import Settings
from pipelex_server.temporal import workflow_id_for
from pipelex_server.temporal.workflows import CALLBACKS_WORKFLOW, RUN_WORKFLOW, CallbackParams, RunParams

logger = logging.getLogger(__name__)

CANCEL_WAIT_SECONDS = 15.0
HEALTH_TIMEOUT_SECONDS = 3


async def workflow_delivers_callbacks(run_id: str) -> None:
    """A run ended: in Temporal mode its workflow delivers its callbacks, with their own activity and retry policy."""


class TemporalExecutor:
    def __init__(self, *, settings: Settings, client: Client, lifecycle: RunLifecycle) -> None:
        self.settings = settings
        self.client = client
        self.lifecycle = lifecycle
        self.running: dict[str, asyncio.Task[dict[str, Any]]] = {}  # stays empty: workers execute the runs

    def start(self) -> None:
        """Temporal owns retries, cancellation and callback delivery: no leases, no sweeper, no delivery loop here."""

    async def close(self, grace_seconds: float) -> None:
        """Nothing executes here: runs in flight go on in the workers."""

    async def claim_slot(self) -> bool:
        return False  # a worker takes the run: it is inserted STARTED

    def release_slot(self) -> None:
        """No slot is ever claimed here."""

    def placement(self, key: str) -> dict[str, Any]:
        return {"lease_owner": None, "lease_expires_at": None, "workflow_id": workflow_id_for(key)}

    def adopt(self, key: str, *, next_seq: int, public_id: str) -> None:
        """A worker executes the run: nothing of it is kept here."""

    async def prepare_execute(
        self, run_id: str | None, request: RunRequest, check: Callable[[str], Awaitable[RunRequest]]
    ) -> tuple[str | None, RunRequest]:
        # the worker gets a request that references storage only, as for /start
        run_id = run_id or new_public_id()
        return run_id, await check(run_id)

    async def submit(self, row: dict[str, Any], *, created: bool, caller: Caller, request: RunRequest, request_id: str | None) -> None:
        """Start the run's workflow; also for a replay (a submission lost in a crash is made again). An already
        started workflow is left alone."""
        params = RunParams(
            run_id=row["id"],
            has_callbacks=bool(request.callback_urls),
            max_attempts=self.settings.temporal_max_attempts,
            run_timeout_seconds=self.settings.run_timeout_seconds,
            heartbeat_timeout_seconds=self.settings.temporal_heartbeat_timeout_seconds,
            callback_max_attempts=self.settings.callback_max_attempts,
            callback_backoff_seconds=self.settings.callback_backoff_seconds,
        )
        try:
            await self.client.start_workflow(RUN_WORKFLOW, params, id=row["workflow_id"], task_queue=self.settings.temporal_task_queue)
        except WorkflowAlreadyStartedError:
            return
        except Exception as exc:
            logger.exception("could not submit run %s to Temporal", row["id"])
            problem = problem_document(503, "temporal.unavailable", "The run could not be submitted to Temporal.")
            await self.lifecycle.finish(row, {"state": "ERROR", "error": problem})
            raise ApiProblem(
                status=503,
                code="temporal.unavailable",
                detail="The run could not be submitted to Temporal; it ended ERROR. Try again later.",
                params={"pipeline_run_id": row["public_id"]},
            ) from exc

    async def wait(self, row: dict[str, Any]) -> dict[str, Any]:
        return await self.lifecycle.wait_ended(row)

    async def cancel(self, row: dict[str, Any]) -> None:
        """A queued run is cancelled in place; the workflow is cancelled, which reaches the running activity at its
        next heartbeat; then wait (bounded) for the run to end."""
        if row["state"] == "STARTED":
            await self.lifecycle.cancel_queued(row)
        try:
            await self.client.get_workflow_handle(row["workflow_id"]).cancel()
        except Exception:
            logger.warning("could not cancel the workflow of run %s", row["id"], exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.lifecycle.wait_ended(row), CANCEL_WAIT_SECONDS)

    async def redeliver(self, row: dict[str, Any]) -> None:
        key = row["id"]
        params = CallbackParams(
            run_id=key, max_attempts=self.settings.callback_max_attempts, backoff_seconds=self.settings.callback_backoff_seconds
        )
        workflow_id = f"{row['workflow_id'] or workflow_id_for(key)}-callbacks-{uuid.uuid4().hex[:12]}"
        await self.client.start_workflow(CALLBACKS_WORKFLOW, params, id=workflow_id, task_queue=self.settings.temporal_task_queue)

    async def health(self) -> dict[str, str]:
        try:
            await asyncio.wait_for(self.client.service_client.check_health(), HEALTH_TIMEOUT_SECONDS)
        except Exception as exc:
            return {"temporal": f"failing: {type(exc).__name__}"}
        return {"temporal": "ok"}
