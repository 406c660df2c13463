"""Marks a /start acknowledgement as in progress from the moment its request arrives until its answer is sent.

Runs that have not begun yet wait for pending acks (runs/priority.py). Counting an ack only once its route handler runs
would leave out the reading and parsing of its body and the authentication: a run could begin right then and the ack
would share the event loop with it. This pure-ASGI middleware marks the whole request instead (cheap: one path test).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class AckWindowMiddleware:
    def __init__(self, app: ASGIApp, *, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)  # set by the lifespan; absent before it ran
        if services is None:
            await self.app(scope, receive, send)
            return
        with services.runs.acks.acknowledging():
            await self.app(scope, receive, send)
