"""The provider client's check for connections the server closed, without rebuilding the socket's attributes each time.

The OpenAI SDK sends through httpcore2's connection pool. Before each request and after each response the pool asks
every idle connection whether its socket is readable (an idle socket that is readable is one the server closed). The
question goes through anyio's typed attributes, which build a dictionary of every attribute of the socket on each
call: ~4.5 µs, for a poll of ~0.5 µs. With 32 runs in flight a run triggers ~50 such checks (py-spy over bursts:
4.5 % of the event loop thread's samples). A stream's socket is the same object for the stream's life (anyio hands
out the transport's socket, whose descriptor becomes -1 once closed, which the check reads as "closed"), so each
stream remembers it on first use and the check polls it directly. Every other attribute still goes through anyio.
"""

from __future__ import annotations

from typing import Any

_MARK = "_pipelex_server_probe"
_SOCKET = "_pipelex_server_socket"


def _remembering(original: Any, is_socket_readable: Any) -> Any:
    def get_extra_info(self: Any, info: str) -> Any:
        if info != "is_readable":
            return original(self, info)
        sock = getattr(self, _SOCKET, None)
        if sock is None:
            sock = original(self, "socket")
            if sock is None:  # no socket to remember: the stream's own answer
                return original(self, info)
            setattr(self, _SOCKET, sock)
        return is_socket_readable(sock)

    setattr(get_extra_info, _MARK, True)
    return get_extra_info


def install_connection_probe() -> None:
    """Patch httpcore2's anyio stream (idempotent; nothing when the process has not imported httpcore2)."""
    import sys

    if "httpcore2" not in sys.modules:
        return
    from httpcore2._backends.anyio import AnyIOStream
    from httpcore2._utils import is_socket_readable

    original = AnyIOStream.get_extra_info
    if getattr(original, _MARK, False):
        return
    AnyIOStream.get_extra_info = _remembering(original, is_socket_readable)  # type: ignore[method-assign]
