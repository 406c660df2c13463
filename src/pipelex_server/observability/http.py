"""HTTP request metrics as a pure-ASGI middleware: count and time every request by method, route template and status."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelex_server.observability import metrics

UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/api/v1/runs/{run_id}``), never the raw path (bounded cardinality)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not metrics.enabled():
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.http_request(scope["method"], route_template(scope), status, time.perf_counter() - began)
