"""Opaque list cursors, signed: bound to the caller, the list and the filters that issued them. Anything else — a
tampered, truncated or foreign cursor — is refused with a 400 before any query runs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from pipelex_server.api.protocol.platform_problems import invalid_cursor
from pipelex_server.errors import ApiProblem
from pipelex_server.files.links import LinkSigner

_MAC_CHARS = 32
MAX_CURSOR_CHARS = 1024


def filters_digest(filters: dict[str, Any]) -> str:
    """A short digest of a list's filters (what a cursor is bound to)."""
    text = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Cursors:
    def __init__(self, signer: LinkSigner) -> None:
        self.signer = signer

    def _mac(self, caller_id: str, payload: str) -> str:
        return self.signer.mac("cursor", f"{caller_id}\n{payload}")[:_MAC_CHARS]

    def issue(self, *, caller_id: str, list_id: str, filters: dict[str, Any], position: list[Any]) -> str:
        raw = json.dumps([list_id, filters_digest(filters), position], separators=(",", ":")).encode()
        payload = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return f"{payload}.{self._mac(caller_id, payload)}"

    def read(self, cursor: str, *, caller_id: str, list_id: str, filters: dict[str, Any], field: str = "cursor") -> list[Any]:
        """The position a cursor names, or a 400 naming ``field``."""
        problem: ApiProblem = invalid_cursor(field)
        payload, _, mac = cursor.partition(".")
        if not payload or len(cursor) > MAX_CURSOR_CHARS or not mac.isascii():
            raise problem
        if not hmac.compare_digest(mac.encode("ascii"), self._mac(caller_id, payload).encode("ascii")):
            raise problem
        try:
            issued_list, digest, position = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, TypeError) as exc:
            raise problem from exc
        if issued_list != list_id or digest != filters_digest(filters) or not isinstance(position, list):
            raise problem
        return position
