"""Pure-ASGI middleware (cheap on the hot path): request ids and the request body size limit."""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelex_server.errors import ApiProblem, problem_response_bytes
from pipelex_server.observability import logs

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class RequestIdMiddleware:
    """Echo a well-formed X-Request-ID (the runtime accepts only [A-Za-z0-9_-]{1,128}), else make one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if REQUEST_ID_RE.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        logs.bind_request(request_id)  # this request's log lines, and the runs it starts, carry it
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodySizeLimitMiddleware:
    """413 ``request.too_large`` for a declared or streamed body over the limit, before anything parses it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, upload_path: str | None = None, upload_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_path = upload_path
        self.upload_max_bytes = upload_max_bytes or max_bytes

    @staticmethod
    def _problem(limit: int, setting: str) -> ApiProblem:
        return ApiProblem(
            status=413,
            code="request.too_large",
            detail=f"The request body exceeds the limit of {limit} bytes ({setting}).",
            params={"limit_bytes": limit},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = self.upload_path is not None and scope["path"].rstrip("/") == self.upload_path
        limit = self.upload_max_bytes if is_upload else self.max_bytes
        setting = "UPLOAD_MAX_MIB" if is_upload else "MAX_REQUEST_BODY_MIB"  # the problem is built only when answered
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await send_problem(scope, send, self._problem(limit, setting))
                    return
                break

        received = 0
        exceeded = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the framework answers to a body cut short (FastAPI says 400), the client gets our 413.
            nonlocal replaced
            if exceeded:
                if not replaced and message["type"] == "http.response.start":
                    replaced = True
                    await send_problem(scope, send, self._problem(limit, setting))
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await send_problem(scope, send, self._problem(limit, setting))


class _TooLarge(Exception):
    pass


async def send_problem(scope: Scope, send: Send, problem: ApiProblem) -> None:
    request_id: Any = scope.get("state", {}).get("request_id")
    body, headers = problem_response_bytes(problem, request_id=request_id)
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
