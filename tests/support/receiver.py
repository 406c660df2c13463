"""A real callback receiver on loopback: records every POST, can fail the first N with a status, and checks both
signature schemes (X-Completion-Signature and Standard Webhooks) the way a receiver in production would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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
