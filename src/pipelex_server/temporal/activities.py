"""The activities a worker runs: execute a run, settle a run its workflow could not finish, deliver callbacks.

They delegate to the run service's attempts (runs/attempts.py), written by the one writer of run state, so a run
executed by a worker is recorded exactly as one executed in-process (same states, events, usage, outputs).
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import activity
from temporalio.exceptions import ApplicationError

from pipelex_server.observability import metrics
from pipelex_server.runs.attempts import RunAttempts
from pipelex_server.runs.model import RetryableRunFailure
from pipelex_server.temporal.workflows import (
    CALLBACKS_ACTIVITY,
    EXECUTE_ACTIVITY,
    RETRYABLE,
    SETTLE_ACTIVITY,
    CallbackParams,
    ExecuteParams,
    SettleParams,
)

HEARTBEAT_SECONDS = 1.0


class RunActivities:
    def __init__(self, attempts: RunAttempts) -> None:
        self.attempts = attempts

    async def _heartbeat_forever(self) -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    @activity.defn(name=EXECUTE_ACTIVITY)
    async def execute_run(self, params: ExecuteParams) -> str:
        info = activity.info()
        metrics.activity_attempt(EXECUTE_ACTIVITY, info.attempt)
        beating = asyncio.create_task(self._heartbeat_forever(), name=f"heartbeat-{params.run_id}")
        try:
            return await self.attempts.execute_assigned(
                params.run_id, attempt=info.attempt, max_attempts=params.max_attempts, worker_shutdown=activity.is_worker_shutdown
            )
        except RetryableRunFailure as exc:
            raise ApplicationError(str(exc), type=RETRYABLE) from None
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    @activity.defn(name=SETTLE_ACTIVITY)
    async def settle_run(self, params: SettleParams) -> str:
        metrics.activity_attempt(SETTLE_ACTIVITY, activity.info().attempt)
        return await self.attempts.settle_assigned(params.run_id, reason=params.reason, detail=params.detail)

    @activity.defn(name=CALLBACKS_ACTIVITY)
    async def deliver_callbacks(self, params: CallbackParams) -> None:
        metrics.activity_attempt(CALLBACKS_ACTIVITY, activity.info().attempt)
        remaining = await self.attempts.deliver_assigned(params.run_id)
        if remaining:
            raise ApplicationError(f"{remaining} callback(s) of run {params.run_id} not delivered yet", type="CallbacksPending")
