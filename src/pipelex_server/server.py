"""Running the app under uvicorn, with TCP_NODELAY forced on every accepted socket.

With ``--workers N`` uvicorn (like its gunicorn worker) leaves Nagle's algorithm on for accepted sockets on Linux
(uvicorn issue #3149): each keep-alive request after the first then waits ~40 ms for a delayed ACK. Our HTTP
protocol classes set TCP_NODELAY in ``connection_made`` whatever the process model.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn
import uvicorn.supervisors.multiprocess as uvicorn_multiprocess
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipelex_server.lifecycle import SHUTTING_DOWN

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)  # type: ignore[arg-type]


if HttpToolsProtocol is not None:

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            set_nodelay(transport)
            super().connection_made(transport)  # type: ignore[arg-type]

    HTTP_PROTOCOL: Any = NoDelayHttpToolsProtocol
else:
    HTTP_PROTOCOL = NoDelayH11Protocol


class Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: Any) -> None:
        SHUTTING_DOWN.set()
        super().handle_exit(sig, frame)


# `--workers N`: uvicorn's supervisor builds each worker's server from this module global. Worker processes import
# this module when they unpickle the config (it names our HTTP protocol class), so they run our subclass too.
uvicorn_multiprocess.Server = Server  # type: ignore[misc]


def serve(*, host: str, port: int, workers: int = 1, log_level: str = "info", log_config: dict[str, Any] | None = None) -> None:
    config = uvicorn.Config(
        "pipelex_server.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=HTTP_PROTOCOL,
        log_level=log_level,
        **({"log_config": log_config} if log_config is not None else {}),  # applied again in each worker process
        lifespan="on",
        timeout_graceful_shutdown=60,
        proxy_headers=False,
        server_header=False,
    )
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
    else:
        Server(config).run()
