"""Expiring links to a method's files: a URL of `GET /v1/method-files/{sha256}` whose query carries the caller's scope,
an expiry and an HMAC-SHA256 over the three, made by the storage links' signer (files/links.py: one key, from
STORAGE_LINK_SIGNING_KEY, else BLOB_UPLOAD_SIGNING_KEY, else a key of this process; a purpose of its own, so a
method-file signature never passes for a storage link or a cursor). The link needs no bearer token; it reads one blob
of one caller until it expires, and tampering with any part of it voids it."""

from __future__ import annotations

import hmac
import time
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from pipelex_server.catalog.views import iso
from pipelex_server.files.links import LinkSigner

LINK_PATH = "/v1/method-files/"


class FileLinks:
    def __init__(self, signer: LinkSigner) -> None:
        self.signer = signer
        self.ttl_seconds = signer.ttl_seconds

    def _signature(self, scope: str, sha256: str, expires: int) -> str:
        return self.signer.mac("method-file", f"{scope}\n{sha256}\n{expires}")

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
