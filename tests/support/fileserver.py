"""A real HTTP(S) file server on loopback for tests that make the server fetch documents and images.

    with FileServer() as files:
        files.add("/report.pdf", pdf_bytes, "application/pdf")
        url = files.url("/report.pdf")          # http://127.0.0.1:<port>/report.pdf
        ...
        assert files.hits("/report.pdf") == 1

Routes are matched on the path alone (the query string is ignored, but recorded). Besides static content a route can
redirect, answer any status, send a large body with or without Content-Length (chunked), drip a body slowly, send a
gzip bomb, hold every request until a ``Gate`` opens (counting how many are held at once), or be any function of an
``Exchange``. Every request is recorded as a ``Served`` (headers, how much of the
body was written, whether the response was written in full), so a test can tell whether the client read a body or
hung up early. An unknown path answers 404 and is recorded too.

The server runs in a background thread (one thread per connection, TCP_NODELAY), speaks HTTP/1.1, and ``stop()``
closes every open connection and wakes every waiting route, so no test waits for a slow route to finish. Pass a
``TestTLS`` to serve HTTPS with a throw-away CA (made with the ``openssl`` command).
"""

from __future__ import annotations

import contextlib
import functools
import mimetypes
import socket
import ssl
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_PATTERN_CHUNK = bytes(range(256)) * 256  # 64 KiB written again and again for large bodies


@dataclass
class Served:
    """One request as the server saw it, and how far the answer got."""

    method: str
    path: str  # as requested, query included
    headers: dict[str, str]  # names lower-cased
    status: int | None = None
    body_bytes_sent: int = 0  # body bytes handed to the socket (which may still sit in kernel buffers)
    completed: bool = False  # the whole response was written
    error: str | None = None  # why writing stopped, e.g. the client closed the connection
    finished: threading.Event = field(default_factory=threading.Event, repr=False)


class Exchange:
    """What a route uses to answer one request: ``start`` the response, ``write`` the body, ``wait`` between writes."""

    def __init__(self, handler: BaseHTTPRequestHandler, served: Served, stopping: threading.Event) -> None:
        self._handler = handler
        self._stopping = stopping
        self._chunked = False
        self.served = served

    @property
    def head_only(self) -> bool:
        return self.served.method == "HEAD"

    def start(self, status: int, headers: Iterable[tuple[str, str]] = (), *, length: int | None) -> None:
        """Send the status line and headers; ``length=None`` means a chunked body."""
        handler = self._handler
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        if length is None:
            self._chunked = True
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        self.served.status = status

    def write(self, data: bytes) -> None:
        if self.head_only or not data:
            return
        if self._chunked:
            self._handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self._handler.wfile.write(data)
        self.served.body_bytes_sent += len(data)

    def end(self) -> None:
        if self._chunked and not self.head_only:
            self._handler.wfile.write(b"0\r\n\r\n")

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the server stops first; True when it is stopping (the route should return)."""
        return self._stopping.wait(seconds)


Route = Callable[[Exchange], None]


class Gate:
    """Holds the requests of a route until ``open()``; counts the requests held at once, and the most ever held."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open = False
        self.held = 0
        self.most_held = 0
        self.arrived = 0

    def enter(self, stopping: threading.Event) -> None:
        with self._changed:
            self.arrived += 1
            self.held += 1
            self.most_held = max(self.most_held, self.held)
            self._changed.notify_all()
            while not self._open and not stopping.is_set():
                self._changed.wait(0.05)

    def leave(self) -> None:
        with self._changed:
            self.held -= 1
            self._changed.notify_all()

    def open(self) -> None:
        with self._changed:
            self._open = True
            self._changed.notify_all()

    def wait_held(self, count: int, timeout: float = 5.0) -> bool:
        """True once ``count`` requests are held at once; False if that did not happen within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.held >= count, timeout)


class FileServer:
    def __init__(self, *, tls: TestTLS | None = None) -> None:
        self._routes: dict[str, Route] = {}
        self._served: list[Served] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self.connections_accepted = 0
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        if tls is not None:
            self._server.socket = tls.server_context().wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fileserver", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/", *, host: str = "127.0.0.1") -> str:
        """The URL of ``path``; pass ``host="localhost"`` for a name rather than an address (TLS needs it)."""
        return f"{self.scheme}://{host}:{self.port}{path}"

    # --- routes ----------------------------------------------------------------------------------------------------

    def route(self, path: str, handler: Route) -> None:
        """Answer ``path`` with any function of an ``Exchange`` (it must call ``start``)."""
        with self._lock:
            self._routes[path] = handler

    def add(
        self,
        path: str,
        body: bytes,
        content_type: str | None = "application/octet-stream",
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Static content; ``content_type=None`` sends no Content-Type header; ``status`` may be any code (404, 500...)."""
        fixed = [("Content-Type", content_type)] if content_type else []
        fixed += list((headers or {}).items())

        def answer(exchange: Exchange) -> None:
            exchange.start(status, fixed, length=len(body))
            exchange.write(body)

        self.route(path, answer)

    def add_file(self, path: str, file: Path, content_type: str | None = None) -> None:
        """The bytes of ``file``, typed from its suffix unless ``content_type`` is given."""
        self.add(path, file.read_bytes(), content_type or mimetypes.guess_type(file.name)[0] or "application/octet-stream")

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Redirect to ``location`` as given: absolute (any scheme, any host) or relative."""
        self.add(path, b"", None, status=status, headers={"Location": location})

    def large(self, path: str, size: int, *, content_length: bool = True, content_type: str = "application/octet-stream") -> None:
        """A body of ``size`` bytes written in 64 KiB pieces, declared by Content-Length or sent chunked."""

        def answer(exchange: Exchange) -> None:
            exchange.start(200, [("Content-Type", content_type)], length=size if content_length else None)
            remaining = size
            while remaining > 0:
                piece = _PATTERN_CHUNK[: min(remaining, len(_PATTERN_CHUNK))]
                exchange.write(piece)
                remaining -= len(piece)
            exchange.end()

        self.route(path, answer)

    def drip(
        self,
        path: str,
        *,
        chunk: bytes = b".",
        count: int,
        interval: float,
        content_length: bool = True,
        content_type: str = "application/octet-stream",
    ) -> None:
        """Headers at once, then ``chunk`` every ``interval`` seconds, ``count`` times (declared length: count * chunk)."""

        def answer(exchange: Exchange) -> None:
            exchange.start(200, [("Content-Type", content_type)], length=count * len(chunk) if content_length else None)
            for _ in range(count):
                if exchange.wait(interval):
                    return
                exchange.write(chunk)
            exchange.end()

        self.route(path, answer)

    def hold(self, path: str, body: bytes, content_type: str = "application/octet-stream") -> Gate:
        """Static content whose requests all wait until the returned gate opens (or the server stops)."""
        gate = Gate()

        def answer(exchange: Exchange) -> None:
            gate.enter(self._stopping)
            try:
                exchange.start(200, [("Content-Type", content_type)], length=len(body))
                exchange.write(body)
            finally:
                gate.leave()

        self.route(path, answer)
        return gate

    def gzip_bomb(self, path: str, decoded_size: int, content_type: str = "application/octet-stream") -> int:
        """A body sent with ``Content-Encoding: gzip`` that decodes to ``decoded_size`` zero bytes; returns its encoded size."""
        encoded = _gzipped_zeros(decoded_size)
        self.add(path, encoded, content_type, headers={"Content-Encoding": "gzip"})
        return len(encoded)

    # --- what was served -------------------------------------------------------------------------------------------

    def hits(self, path: str) -> int:
        """How many requests arrived for ``path`` (query ignored)."""
        with self._lock:
            return sum(1 for served in self._served if _route_path(served.path) == path)

    def requests(self, path: str | None = None) -> list[Served]:
        with self._lock:
            return [served for served in self._served if path is None or _route_path(served.path) == path]

    def wait_served(self, path: str, count: int = 1, timeout: float = 5.0) -> list[Served]:
        """Wait until ``count`` requests for ``path`` were answered (or abandoned) and return them."""

        def done() -> list[Served]:
            return [served for served in self._served if _route_path(served.path) == path and served.finished.is_set()]

        with self._changed:
            if not self._changed.wait_for(lambda: len(done()) >= count, timeout):
                raise TimeoutError(f"{len(done())} requests for {path} finished, expected {count}")
            return done()

    def reset(self) -> None:
        """Forget the recorded requests (routes stay)."""
        with self._lock:
            self._served.clear()
            self.connections_accepted = 0

    # --- plumbing --------------------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            timeout = 30

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(self.timeout)
                    try:
                        self.request.do_handshake()
                    except (OSError, ssl.SSLError):
                        self.close_connection = True
                        raise
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)
                    server.connections_accepted += 1

            def finish(self) -> None:
                with server._lock:
                    server._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_GET(self) -> None:
                server._answer(self)

            def do_HEAD(self) -> None:
                server._answer(self)

            def log_message(self, *args: Any) -> None:
                pass

            def log_error(self, *args: Any) -> None:
                pass

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        headers: dict[str, str] = {}
        for name, value in handler.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        served = Served(method=handler.command, path=handler.path, headers=headers)
        with self._changed:
            self._served.append(served)
            route = self._routes.get(_route_path(handler.path))
            self._changed.notify_all()
        exchange = Exchange(handler, served, self._stopping)
        try:
            if route is None:
                exchange.start(404, [("Content-Type", "text/plain")], length=9)
                exchange.write(b"not found")
            else:
                route(exchange)
            handler.wfile.flush()
            served.completed = served.error is None and not self._stopping.is_set()
        except OSError as exc:
            served.error = type(exc).__name__
            handler.close_connection = True
        finally:
            with self._changed:
                served.finished.set()
                self._changed.notify_all()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up or refuses the certificate is what these tests provoke: no traceback on stderr."""


def _route_path(path: str) -> str:
    return urlsplit(path).path


@functools.lru_cache(maxsize=8)
def _gzipped_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = []
    remaining = size
    while remaining > 0:
        parts.append(compressor.compress(block[: min(remaining, len(block))]))
        remaining -= len(block)
    parts.append(compressor.flush())
    return b"".join(parts)


@dataclass(frozen=True)
class TestTLS:
    """A throw-away CA and a server certificate signed by it, for serving HTTPS on loopback in tests."""

    __test__ = False  # not a pytest test class

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path, names: Iterable[str] = ("localhost",)) -> TestTLS:
        """Make the CA and a certificate for ``names`` (DNS names, or IP addresses) in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca_file = directory / "ca.key", directory / "ca.pem"
        key_file, csr_file, cert_file = directory / "server.key", directory / "server.csr", directory / "server.pem"
        extensions = directory / "server.ext"
        alt_names = ",".join(f"IP:{name}" if _is_address(name) else f"DNS:{name}" for name in names)
        extensions.write_text(
            f"subjectAltName={alt_names}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        )
        new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl("req", "-x509", *new_key, "-keyout", ca_key, "-out", ca_file, "-days", "2", "-subj", "/CN=pipelex-server test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        _openssl("req", *new_key, "-keyout", key_file, "-out", csr_file, "-subj", "/CN=pipelex-server test")
        _openssl("x509", "-req", "-in", csr_file, "-CA", ca_file, "-CAkey", ca_key, "-CAcreateserial", "-out", cert_file,
                 "-days", "2", "-extfile", extensions)  # fmt: skip
        return cls(ca_file=ca_file, cert_file=cert_file, key_file=key_file)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this CA only."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _is_address(name: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
    except OSError:
        return False
    return True


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
