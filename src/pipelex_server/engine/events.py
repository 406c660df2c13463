"""Per-run progress: an observer on the run's own pipe router (root and every sub-pipe report through it), and
an in-memory trace-event sink (usage assembly reads the run's usage events back from it).

Progress reaches the server as plain dicts, so nothing outside the engine sees a runtime class.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pipelex.errors.problem import ProblemView
from pipelex.observer.observer_protocol import PayloadKey, PayloadType
from pipelex.tracing.in_memory_event_log import InMemoryEventLog
from pipelex.tracing.trace_events import TraceEvent, UsageReportEvent

from pipelex_server.engine.inference_metrics import count_inference
from pipelex_server.engine.types import ProgressSink
from pipelex_server.observability import metrics, tracing_spans

logger = logging.getLogger(__name__)


class RunEventLog(InMemoryEventLog):
    """Keeps the run's trace events for the run's own usage assembly (dropped with the run), and forwards each
    inference call's usage to the sink as it is reported."""

    def __init__(self, sink: ProgressSink | None = None) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, event: TraceEvent) -> None:
        super().emit(event)
        if isinstance(event, UsageReportEvent):
            count_inference(event.tokens_usage)
            tracing_spans.inference_reported(event.tokens_usage)  # a GenAI span per inference call (docs/tracing.md)
        if self._sink is not None and isinstance(event, UsageReportEvent):
            try:
                usage = event.tokens_usage
                tokens = {str(key): int(value) for key, value in dict(usage.nb_tokens_by_category).items()}
                self._sink("usage", {"pipe_code": usage.job_metadata.pipe_code, "model": usage.inference_model_name, "tokens": tokens})
            except Exception:
                logger.exception("usage forwarding failed")

    def close(self) -> None:
        self._events = []
        self._sink = None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _describe(pipe_job: Any) -> dict[str, Any]:
    pipe = pipe_job.pipe
    output = getattr(pipe, "output", None)
    concept = getattr(getattr(output, "concept", None), "concept_ref", None)
    domain = getattr(pipe, "domain_code", None)
    return {
        "pipe_code": pipe.code,
        "pipe_ref": f"{domain}.{pipe.code}" if domain else pipe.code,
        "pipe_type": str(pipe.type),
        "output_concept": concept,
    }


class ProgressObserver:
    """Forwards pipe start / success / failure to the server's sink. Never breaks a run."""

    def __init__(self, sink: ProgressSink) -> None:
        self._sink = sink
        self._clock = metrics.PipeClock()

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        tracing_spans.pipe_event(event, data)  # a span per pipe, current while it runs (docs/tracing.md)
        try:
            self._sink(event, {**data, "at": _now()})
        except Exception:
            logger.exception("progress sink failed")

    async def observe_before_run(self, payload: PayloadType) -> None:
        self._clock.start(payload[PayloadKey.PIPE_JOB])
        self._emit("pipe_started", _describe(payload[PayloadKey.PIPE_JOB]))

    async def observe_after_successful_run(self, payload: PayloadType) -> None:
        data = _describe(payload[PayloadKey.PIPE_JOB])
        self._clock.stop(payload[PayloadKey.PIPE_JOB], data["pipe_type"], "succeeded")
        self._emit("pipe_finished", data)

    async def observe_after_failing_run(self, payload: PayloadType) -> None:
        data = _describe(payload[PayloadKey.PIPE_JOB])
        self._clock.stop(payload[PayloadKey.PIPE_JOB], data["pipe_type"], "failed")
        error = payload.get(PayloadKey.ERROR)
        try:
            problem = error.to_problem(view=ProblemView.CALLER)  # type: ignore[union-attr]
            data["error"] = {"code": problem.code, "detail": problem.detail}
        except Exception:
            data["error"] = {"code": "runtime.unexpected", "detail": "The pipe failed."}
        self._emit("pipe_failed", data)
