"""Expiring links to a method's files: a URL of `GET /v1/method-files/{sha256}` whose query carries the caller's scope,
an expiry and an HMAC-SHA256 over the three with the server's key. The link needs no bearer token; it reads one blob
of one caller until it expires, and tampering with any part of it voids it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from pipelex_server.catalog.views import iso

LINK_PATH = "/v1/method-files/"
DEFAULT_TTL_SECONDS = 900  # about fifteen minutes, as the SDK documents


class FileLinks:
    def __init__(self, *, key: bytes | None = None, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self._key = key or secrets.token_bytes(32)
        self.ttl_seconds = ttl_seconds

    def _signature(self, scope: str, sha256: str, expires: int) -> str:
        message = f"method-file\n{scope}\n{sha256}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def link(self, base_url: str, *, scope: str, sha256: str) -> tuple[str, str]:
        """The link and its expiry (ISO-8601 UTC)."""
        expires = int(time.time()) + self.ttl_seconds
        query = urlencode({"scope": scope, "expires": expires, "signature": self._signature(scope, sha256, expires)})
        url = f"{base_url.rstrip('/')}{LINK_PATH}{quote(sha256)}?{query}"
        return url, iso(datetime.fromtimestamp(expires, UTC)) or ""

    def check(self, *, scope: str, sha256: str, expires: str, signature: str) -> bool:
        """True for a link this server signed for exactly this scope and blob, not yet expired (constant-time)."""
        if not expires.isdigit() or len(expires) > 20 or int(expires) < time.time():
            return False
        return hmac.compare_digest(self._signature(scope, sha256, int(expires)), signature)
