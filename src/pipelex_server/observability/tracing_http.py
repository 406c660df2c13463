"""The HTTP server span: a pure-ASGI middleware (installed only when tracing is on) that opens one span per request,
continuing the caller's W3C ``traceparent``, named by the route template once routing has matched it."""

from __future__ import annotations

import functools
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelex_server.observability.tracing import STATE, extract

_PROPAGATED = (b"traceparent", b"tracestate", b"baggage")


class TracingMiddleware:
    """One SERVER span per HTTP request: ``http.request.method``, ``url.path``, ``http.route`` (the template, e.g.
    ``/api/v1/runs/{run_id}``), ``http.response.status_code`` and the request id (``X-Request-ID``) it answered with.
    A streamed answer (SSE) ends its span when the stream ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not STATE.enabled:
            await self.app(scope, receive, send)
            return
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"] if name in _PROPAGATED}
        parent = extract(carrier) if carrier else None
        method = scope.get("method", "GET")
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "url.scheme": scope.get("scheme", "http"),
        }
        span = STATE.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status: int | None = None

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.set_attribute("http.route", route)
                span.update_name(f"{method} {route}")
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            request_id = scope.get("state", {}).get("request_id")
            if request_id:
                span.set_attribute("pipelex.request_id", str(request_id))
            otel_context.detach(token)
            span.end()


@functools.cache
def fastapi_telemetry_off() -> dict[str, Any]:
    """``FastAPI(...)`` keywords that turn off the framework's own request spans (FastAPI >= 0.165 traces natively
    once a tracer provider exists), so each request is one server span, ours; empty for a FastAPI without them."""
    import inspect

    from fastapi import FastAPI

    return {"telemetry": {"tracing": False}} if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {}
