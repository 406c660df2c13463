"""The spans of a run: the run itself, each pipe (at the pipe router's observer), each inference call (from the
runtime's usage report, GenAI semantic conventions), each URL fetch and each callback attempt (which sends
``traceparent``). Hooks are one-line calls from the code they observe; each returns at once when tracing is off and
never raises into a run.

A pipe span is opened by the observer's ``before`` hook and made current in the task running the pipe, so the pipe's
sub-pipes and inference calls become its children; the ``after`` hooks close it. A pipe the runtime never reports
ended (a cancelled run) is closed by its run's span.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from pipelex_server.observability.tracing import STATE, inject, remember_run, run_context

logger = logging.getLogger(__name__)

T = TypeVar("T")
# the pipe spans a run has open (shared by the run's tasks: each copies the context, the list is the same object)
_OPEN_PIPES: ContextVar[list[tuple[Any, Any, str]] | None] = ContextVar("pipelex_server_open_pipes", default=None)
_OPERATIONS = {"llm": "chat", "img_gen": "generate_image", "extract": "extract", "search": "search", "judgment": "judgment"}


# ---------------------------------------------------------------- runs


def run_span(method: Callable[..., Awaitable[dict[str, Any]]]) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Decorates ``RunExecution.run(self, row, caller, request, ...)``: one span per executed run (an attempt, in
    Temporal mode), child of the request or activity that started it; its status follows the run's end state."""

    @functools.wraps(method)
    async def traced(self: Any, row: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        if not STATE.enabled:
            return await method(self, row, *args, **kwargs)
        attributes: dict[str, Any] = {"pipelex.run.id": str(row.get("public_id") or ""), "pipelex.run.dry_run": bool(row.get("dry_run"))}
        for key in ("pipe_code", "workflow_id"):
            if row.get(key):
                attributes[f"pipelex.run.{key}"] = row[key]
        span = STATE.tracer.start_span(f"run {row.get('pipe_code') or ''}".strip(), attributes=attributes)
        ctx = trace.set_span_in_context(span)
        remember_run(str(row["id"]), ctx)
        open_pipes: list[tuple[Any, Any, str]] = []
        pipes_token = _OPEN_PIPES.set(open_pipes)
        token = otel_context.attach(ctx)
        try:
            values = await method(self, row, *args, **kwargs)
        except BaseException as exc:
            span.set_attribute("pipelex.run.state", "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "ERROR")
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        else:
            state = str(values.get("state") or "")
            span.set_attribute("pipelex.run.state", state)
            if state != "COMPLETED":
                code = str((values.get("error") or {}).get("code") or "")
                span.set_attribute("pipelex.error.code", code)
                span.set_status(Status(StatusCode.ERROR, code or state))
            return values
        finally:
            for pipe_span, _pipe_token, _code in reversed(open_pipes):  # never reported ended: the run stopped them
                pipe_span.set_status(Status(StatusCode.ERROR, "not finished"))
                pipe_span.end()
            open_pipes.clear()
            otel_context.detach(token)
            _OPEN_PIPES.reset(pipes_token)
            span.end()

    return traced


# ---------------------------------------------------------------- pipes


def pipe_event(event: str, data: dict[str, Any]) -> None:
    """The pipe router observer's progress events: ``pipe_started`` opens the pipe's span, ``pipe_finished`` and
    ``pipe_failed`` (with ``data["error"]["code"]``) close it."""
    if not STATE.enabled:
        return
    if event == "pipe_started":
        pipe_started(data)
    elif event == "pipe_finished":
        pipe_ended(data)
    elif event == "pipe_failed":
        pipe_ended(data, error_code=str((data.get("error") or {}).get("code") or "runtime.unexpected"))


def pipe_started(data: dict[str, Any]) -> None:
    """A pipe starts (``data``: the progress event's pipe_code, pipe_ref, pipe_type, output_concept)."""
    if not STATE.enabled:
        return
    try:
        code = str(data.get("pipe_code") or "")
        attributes = {
            "pipelex.pipe.code": code,
            "pipelex.pipe.ref": str(data.get("pipe_ref") or code),
            "pipelex.pipe.type": str(data.get("pipe_type") or ""),
        }
        if data.get("output_concept"):
            attributes["pipelex.pipe.output_concept"] = str(data["output_concept"])
        span = STATE.tracer.start_span(f"pipe {code}", attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        open_pipes = _OPEN_PIPES.get()
        if open_pipes is not None:
            open_pipes.append((span, token, code))
    except Exception:
        logger.debug("pipe span not started", exc_info=True)


def pipe_ended(data: dict[str, Any], error_code: str | None = None) -> None:
    """The pipe the current span stands for ended (failed with ``error_code``)."""
    if not STATE.enabled:
        return
    try:
        current = trace.get_current_span()
        open_pipes = _OPEN_PIPES.get() or []
        entry = next((item for item in reversed(open_pipes) if item[0] is current), None)
        if entry is None or entry[2] != str(data.get("pipe_code") or ""):
            return
        open_pipes.remove(entry)
        span, token, _code = entry
        if error_code is not None:
            span.set_attribute("pipelex.error.code", error_code)
            span.set_status(Status(StatusCode.ERROR, error_code))
        otel_context.detach(token)
        span.end()
    except Exception:
        logger.debug("pipe span not ended", exc_info=True)


# ---------------------------------------------------------------- inference calls


def _epoch_ns(moment: Any) -> int | None:
    return int(moment.timestamp() * 1e9) if isinstance(moment, datetime) else None


def inference_reported(usage: Any) -> None:
    """One inference call, from the runtime's usage report (``model_type``, ``inference_model_name``,
    ``inference_model_id``, ``backend_name``, ``nb_tokens_by_category``, ``job_metadata.started_at/completed_at``):
    a span with the GenAI semantic conventions, child of the pipe it served, dated as the call was."""
    if not STATE.enabled:
        return
    try:
        tokens = {str(key): int(value) for key, value in dict(usage.nb_tokens_by_category).items()}
        model_type = str(getattr(usage, "model_type", "llm"))
        operation = _OPERATIONS.get(model_type, model_type)
        model = str(usage.inference_model_name)
        system = str(getattr(usage, "backend_name", None) or "unknown")
        input_tokens = tokens.get("input", tokens.get("input_joined", tokens.get("input_non_cached", 0) + tokens.get("input_cached", 0)))
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.system": system,
            "gen_ai.provider.name": system,
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": tokens.get("output", 0),
            "pipelex.pipe.code": str(getattr(usage.job_metadata, "pipe_code", "") or ""),
        }
        if getattr(usage, "inference_model_id", None):
            attributes["gen_ai.response.model"] = str(usage.inference_model_id)
        metadata = usage.job_metadata
        start, end = _epoch_ns(getattr(metadata, "started_at", None)), _epoch_ns(getattr(metadata, "completed_at", None))
        span = STATE.tracer.start_span(f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attributes, start_time=start)
        span.end(end_time=end if end is not None and start is not None and end >= start else None)
    except Exception:
        logger.debug("inference span not recorded", exc_info=True)


# ---------------------------------------------------------------- fetches and callbacks


def fetch_span(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Decorates ``Fetcher.fetch(self, url, ...)``: one span per URL input fetched (the host only, never the URL's
    path or query); a refusal sets its reason."""

    @functools.wraps(method)
    async def traced(self: Any, url: str, *args: Any, **kwargs: Any) -> T:
        if not STATE.enabled:
            return await method(self, url, *args, **kwargs)
        from urllib.parse import urlsplit

        host = urlsplit(url).hostname or ""
        with STATE.tracer.start_as_current_span("fetch", kind=SpanKind.CLIENT, attributes={"server.address": host}) as span:
            try:
                fetched = await method(self, url, *args, **kwargs)
            except Exception as exc:
                span.set_attribute("pipelex.fetch.outcome", str(getattr(exc, "reason", type(exc).__name__)))
                raise
            span.set_attribute("pipelex.fetch.outcome", "ok")
            size = len(getattr(fetched, "data", b"") or b"")
            span.set_attribute("http.response.body.size", size)
            return fetched

    return traced


@contextlib.contextmanager
def callback_span(run_key: str, url: str, attempt: int) -> Iterator[Any]:
    """One callback attempt, child of the run's span when this process executed the run (else of the current
    context); ``callback_headers`` made inside it carry its ``traceparent``. Yields the span (None when off)."""
    if not STATE.enabled:
        yield None
        return
    from urllib.parse import urlsplit

    attributes = {"server.address": urlsplit(url).hostname or "", "pipelex.callback.attempt": attempt}
    with STATE.tracer.start_as_current_span("callback", context=run_context(run_key), kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


def callback_answered(span: Any, status: int | None, error: str | None) -> None:
    if span is None:
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error[:200]))


def callback_headers(headers: dict[str, str]) -> None:
    """Add the current span's ``traceparent`` to a callback's headers (nothing when tracing is off)."""
    inject(headers)
