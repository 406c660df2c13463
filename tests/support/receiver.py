"""Real callback receivers on loopback.

``Receiver`` records every POST (with the time it arrived), can fail the first N with a status, and checks both
signature schemes (X-Completion-Signature and Standard Webhooks) the way a receiver in production would.
``SlowReceiver`` is a raw-socket server that reads the request, then misbehaves: ``trickle`` sends its answer one
byte every ``interval`` seconds, ``flood`` answers 200 and streams a 1 GiB body generated on the fly (never held in
memory). Both record each connection and how many answer bytes they handed to the socket.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    received_at: float = field(default_factory=time.time)  # wall clock, comparable with a run's finished_at

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def verify(self, secret: str, *, tolerance_seconds: int = 300) -> bool:
        """Both signatures valid and the timestamp fresh (what a receiver checks before trusting the body)."""
        run_id = self.json["pipeline_run_id"]
        expected_legacy = hmac.new(_key(secret), run_id.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(self.headers.get("x-completion-signature", ""), expected_legacy):
            return False
        message_id = self.headers["webhook-id"]
        timestamp = int(self.headers["webhook-timestamp"])
        if abs(time.time() - timestamp) > tolerance_seconds:
            return False
        signed = f"{message_id}.{timestamp}.".encode() + self.body
        expected = base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()
        offered = [part.removeprefix("v1,") for part in self.headers["webhook-signature"].split() if part.startswith("v1,")]
        return any(hmac.compare_digest(candidate, expected) for candidate in offered)


@dataclass
class Receiver:
    fail_first: int = 0
    fail_status: int = 500
    deliveries: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    failing = len(receiver.deliveries) < receiver.fail_first
                    status = receiver.fail_status if failing else 200
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    receiver.deliveries.append(Delivery(self.path, headers, body, status))
                    receiver._arrived.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 30) -> list[Delivery]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self.deliveries)} deliveries, expected {count}")
            return list(self.deliveries)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Connection:
    """One request a ``SlowReceiver`` read, and how far its answer got."""

    request_line: str
    received_at: float = field(default_factory=time.time)
    bytes_sent: int = 0
    closed_by_client: bool = False
    ended: threading.Event = field(default_factory=threading.Event, repr=False)


_FLOOD_PIECE = bytes(range(256)) * 256  # 64 KiB, written again and again


class SlowReceiver:
    """A receiver that reads the whole request, then answers far too slowly (``trickle``) or far too much (``flood``)."""

    def __init__(self, mode: str, *, interval: float = 0.5, flood_bytes: int = 1 << 30) -> None:
        if mode not in ("trickle", "flood"):
            raise ValueError(mode)
        self.mode = mode
        self.interval = interval
        self.flood_bytes = flood_bytes
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_forever, name=f"slow-receiver-{mode}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}/hook"

    def wait_for(self, count: int, timeout: float = 30) -> list[Connection]:
        """Wait until ``count`` requests have arrived (their answers may still be going)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.connections) >= count, timeout):
                raise TimeoutError(f"{len(self.connections)} requests, expected {count}")
            return list(self.connections)

    def _accept_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _address = self._socket.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            request = _read_request(client)
            if request is None:
                return
            connection = Connection(request_line=request)
            with self._arrived:
                self.connections.append(connection)
                self._arrived.notify_all()
            try:
                if self.mode == "trickle":
                    self._trickle(client, connection)
                else:
                    self._flood(client, connection)
            except OSError:
                connection.closed_by_client = True
            finally:
                connection.ended.set()

    def _trickle(self, client: socket.socket, connection: Connection) -> None:
        answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n" + b"." * 1000
        for index in range(len(answer)):
            if self._stopping.wait(self.interval):
                return
            client.sendall(answer[index : index + 1])
            connection.bytes_sent += 1

    def _flood(self, client: socket.socket, connection: Connection) -> None:
        client.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n" % self.flood_bytes)
        remaining = self.flood_bytes
        while remaining > 0 and not self._stopping.is_set():
            piece = _FLOOD_PIECE[: min(remaining, len(_FLOOD_PIECE))]
            client.sendall(piece)
            connection.bytes_sent += len(piece)
            remaining -= len(piece)

    def __enter__(self) -> SlowReceiver:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        for thread in list(self._threads):
            thread.join(timeout=5)


def _read_request(client: socket.socket) -> str | None:
    """Read one HTTP request (headers, then a Content-Length body); its request line, or None if the client left."""
    client.settimeout(10)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = client.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:")), 0)
        while len(body) < length:
            chunk = client.recv(65536)
            if not chunk:
                return None
            body += chunk
    except OSError:
        return None
    client.settimeout(None)
    return lines[0]
