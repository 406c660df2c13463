"""AUTH_MODE=none safety: refuse foreign Host names (DNS rebinding) and cross-origin state changes (CSRF)."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from pipelex_server.api.middleware import send_problem
from pipelex_server.errors import ApiProblem

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def normalize_host(value: str) -> str:
    """``Host`` (or an origin's netloc) without port, brackets, trailing dot or case: ``[::1]:8081`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def allowed_host_names(allowed_hosts: list[str], bind_host: str) -> frozenset[str] | None:
    """The Host names served (None: any). Default: the loopback names and the bind address unless it is a wildcard."""
    if "*" in allowed_hosts:
        return None
    if allowed_hosts:
        return frozenset(normalize_host(host) for host in allowed_hosts)
    names = set(LOOPBACK_NAMES)
    if bind_host not in WILDCARD_BINDS:
        names.add(normalize_host(bind_host))
    return frozenset(names)


class LocalSafetyMiddleware:
    """For a server without authentication (a developer's laptop), a web page the developer visits must not reach it.

    - A ``Host`` outside ``ALLOWED_HOSTS`` is refused (400): a rebinding page reaches the server under its own name.
    - A state-changing request whose ``Origin`` is neither the server itself nor in ``CORS_ALLOW_ORIGINS`` is refused
      (403): a cross-site form or fetch must not upload files or start runs.
    """

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str] | None, origins: list[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = frozenset(origin.rstrip("/").lower() for origin in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        if host is not None and self.hosts is not None and normalize_host(host) not in self.hosts:
            await send_problem(
                scope,
                send,
                ApiProblem(
                    status=400,
                    code="request.host_not_allowed",
                    detail="This server does not answer to that Host name. Its operator can add it to ALLOWED_HOSTS.",
                ),
            )
            return
        if origin is not None and scope["method"] not in SAFE_METHODS and not self._origin_allowed(origin, host):
            await send_problem(
                scope,
                send,
                ApiProblem(
                    status=403,
                    code="request.origin_not_allowed",
                    detail="Cross-origin requests that change state are refused. Its operator can add the origin to CORS_ALLOW_ORIGINS.",
                ),
            )
            return
        await self.app(scope, receive, send)

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        cleaned = origin.strip().rstrip("/").lower()
        if cleaned in self.origins or "*" in self.origins:
            return True
        # the server's own pages (same origin): the origin names the host and port the request was sent to
        netloc = urlsplit(cleaned).netloc
        return bool(netloc) and host is not None and netloc == host.strip().lower()
