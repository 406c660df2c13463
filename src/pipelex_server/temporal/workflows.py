"""The run workflow: one activity executes the pipeline, another delivers the completion callbacks.

Deterministic and runtime-free: this module imports only the Temporal SDK and the standard library, names activities
by their registered names (the pipelex runtime is never loaded here), and does no I/O, reads no clock and draws no
random number. That is what Temporal's workflow sandbox enforces; the workflows run outside it (``sandboxed=False``)
because re-creating the sandbox for every run cost ~45 ms of a run's latency (docs/benchmarks.md), and a test keeps
this module free of the runtime.

- ``execute_run`` executes the run; it heartbeats, checkpoints each finished top-level step (a retry skips them),
  and classifies failures: input and bundle errors end the run FAILED at once; provider rate limits, 5xx and
  timeouts are retried with back-off up to ``max_attempts``.
- If the activity cannot finish (attempts exhausted, timed out, cancelled before a worker started it), the
  workflow settles the run itself (``settle_run``), so a run never stays unfinished.
- ``deliver_callbacks`` has its own retry policy: a receiver that is down is retried without the pipeline ever
  running again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType, is_cancelled_exception

RUN_WORKFLOW = "PipelexRun"
CALLBACKS_WORKFLOW = "PipelexCallbacks"
EXECUTE_ACTIVITY = "pipelex_server.execute_run"
SETTLE_ACTIVITY = "pipelex_server.settle_run"
CALLBACKS_ACTIVITY = "pipelex_server.deliver_callbacks"
NON_RETRYABLE = "PipelexRunNotRetryable"
RETRYABLE = "PipelexRunRetryable"


@dataclass
class RunParams:
    run_id: str  # the run's server-wide key (its public id is unique per caller only)
    has_callbacks: bool
    max_attempts: int = 5
    run_timeout_seconds: float | None = None
    heartbeat_timeout_seconds: float = 30.0
    callback_max_attempts: int = 8
    callback_backoff_seconds: float = 30.0


@dataclass
class ExecuteParams:
    run_id: str
    max_attempts: int


@dataclass
class SettleParams:
    run_id: str
    reason: str  # "cancelled" | "timed_out" (the attempt passed its time limit) | "lost" (attempts exhausted, worker lost)
    detail: str


@dataclass
class CallbackParams:
    run_id: str
    max_attempts: int = 8
    backoff_seconds: float = 30.0


def _callback_retry(params: CallbackParams) -> RetryPolicy:
    # the in-process schedule: CALLBACK_BACKOFF_SECONDS, then x4 each time, at most 12 h apart
    return RetryPolicy(
        initial_interval=timedelta(seconds=params.backoff_seconds),
        backoff_coefficient=4.0,
        maximum_interval=timedelta(hours=12),
        maximum_attempts=params.max_attempts,
    )


async def _deliver(params: CallbackParams) -> None:
    try:
        await workflow.execute_activity(
            CALLBACKS_ACTIVITY,
            params,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=_callback_retry(params),
        )
    except ActivityError:
        workflow.logger.warning("callbacks of run %s were abandoned after %d attempts", params.run_id, params.max_attempts)


@workflow.defn(name=RUN_WORKFLOW, sandboxed=False)
class RunWorkflow:
    @workflow.run
    async def run(self, params: RunParams) -> str:
        # the engine enforces RUN_TIMEOUT_SECONDS itself (a retried attempt gets what is left of it); this bound only
        # catches an attempt that stopped answering. None came from servers that had no default time limit.
        attempt_limit = (params.run_timeout_seconds or 6 * 3600) + 120
        state = "UNKNOWN"
        try:
            state = await workflow.execute_activity(
                EXECUTE_ACTIVITY,
                ExecuteParams(run_id=params.run_id, max_attempts=params.max_attempts),
                start_to_close_timeout=timedelta(seconds=attempt_limit),
                heartbeat_timeout=timedelta(seconds=params.heartbeat_timeout_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=60),
                    maximum_attempts=params.max_attempts,
                    non_retryable_error_types=[NON_RETRYABLE],
                ),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except (ActivityError, asyncio.CancelledError) as exc:
            cause = exc.cause if isinstance(exc, ActivityError) else None
            if is_cancelled_exception(exc):
                reason = "cancelled"
            elif isinstance(cause, TimeoutError) and cause.type in (TimeoutType.START_TO_CLOSE, TimeoutType.SCHEDULE_TO_CLOSE):
                reason = "timed_out"
            else:  # the last attempt failed or its worker stopped heartbeating (killed, partitioned)
                reason = "lost"
            detail = str(cause or exc) or type(exc).__name__
            settle = SettleParams(run_id=params.run_id, reason=reason, detail=detail[:500])
            # a cancellation is delivered once: the activities below run to their end
            state = await workflow.execute_activity(
                SETTLE_ACTIVITY,
                settle,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=20, maximum_interval=timedelta(seconds=30)),
            )
        if params.has_callbacks:
            await _deliver(
                CallbackParams(
                    run_id=params.run_id, max_attempts=params.callback_max_attempts, backoff_seconds=params.callback_backoff_seconds
                )
            )
        return state


@workflow.defn(name=CALLBACKS_WORKFLOW, sandboxed=False)
class CallbacksWorkflow:
    """Re-sends a run's completion callbacks (POST .../callbacks/redeliver)."""

    @workflow.run
    async def run(self, params: CallbackParams) -> None:
        await _deliver(params)
