"""A per-run trace-event sink: keeps the run's events in memory (usage assembly reads them back) and forwards
pipe progress to the server as plain dicts, so nothing outside the engine sees a runtime class."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipelex.tracing.in_memory_event_log import InMemoryEventLog
from pipelex.tracing.trace_events import (
    PipeEndErrorEvent,
    PipeEndSuccessEvent,
    PipeStartEvent,
    TraceEvent,
    UsageReportEvent,
)

logger = logging.getLogger(__name__)

ProgressSink = Callable[[str, dict[str, Any]], None]


class RunEventLog(InMemoryEventLog):
    def __init__(self, sink: ProgressSink | None) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, event: TraceEvent) -> None:
        super().emit(event)
        if self._sink is None:
            return
        try:
            translated = _translate(event)
            if translated is not None:
                self._sink(*translated)
        except Exception:  # progress reporting must never break a run
            logger.exception("progress sink failed")

    def close(self) -> None:
        self._events = []
        self._sink = None


def _translate(event: TraceEvent) -> tuple[str, dict[str, Any]] | None:
    if isinstance(event, PipeStartEvent):
        return "pipe_started", {"pipe_code": event.pipe_code, "pipe_type": event.pipe_type, "at": event.timestamp.isoformat()}
    if isinstance(event, PipeEndSuccessEvent):
        concept = event.output_spec.concept if event.output_spec is not None and hasattr(event.output_spec, "concept") else None
        return "pipe_finished", {
            "pipe_code": event.pipe_code,
            "pipe_type": event.pipe_type,
            "output_concept": str(concept) if concept is not None else None,
            "at": event.ended_at.isoformat(),
        }
    if isinstance(event, PipeEndErrorEvent):
        return "pipe_failed", {
            "pipe_code": event.pipe_code,
            "pipe_type": event.pipe_type,
            "error": {"code": event.error.code, "detail": event.error.detail},
            "at": event.ended_at.isoformat(),
        }
    if isinstance(event, UsageReportEvent):
        usage = event.tokens_usage
        return "usage", {
            "model": usage.inference_model_name,
            "pipe_code": usage.job_metadata.pipe_code,
            "tokens": {str(k): int(v) for k, v in dict(usage.nb_tokens_by_category).items()},
            "at": event.timestamp.isoformat(),
        }
    return None
