"""Expiring download links to a caller's stored objects: HMAC-signed links to this server's download route (local
storage), SigV4 presigned links to the bucket (S3); and the check of a local link when it is followed.

A local link is ``{PUBLIC_BASE_URL}/v1/storage/{key}?caller=…&expires=…&name=…&type=…&signature=…``: the signature (an
HMAC-SHA256 with the server's key) covers the caller, the object's key, the expiry, and the name and type the download
is served under. The key's first segment must be the caller's scope. Any part changed, or the link past its expiry,
and the route refuses it (403) before it looks at the store: the link is the permission, for one object, for a while.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from pipelex_server.storage import ObjectStore, S3ObjectStore

DOWNLOAD_PREFIX = "/v1/storage/"
_LINK_DOMAIN = b"pipelex-server storage link v1"
_INLINE_TYPES = frozenset({"application/pdf", "text/plain"})
_MAX_DECIMAL_DIGITS = 20


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: str


@dataclass(frozen=True)
class LinkGrant:
    """What a checked local link allows: reading ``key`` as ``name`` of ``media_type``."""

    key: str
    name: str
    media_type: str


class LinkRefused(Exception):
    """A local link this server did not sign, for this object and caller, or one past its expiry. The message is safe to
    show."""


def content_disposition(name: str, media_type: str) -> str:
    """``inline`` for an image (not SVG), a PDF or plain text, ``attachment`` otherwise; the name in both forms."""
    disposition = (
        "inline" if (media_type.startswith("image/") and media_type != "image/svg+xml") or media_type in _INLINE_TYPES else "attachment"
    )
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    ascii_name = "".join(char if char.isprintable() and char not in '"\\' else "_" for char in ascii_name) or "download"
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _decimal(text: str | None) -> int | None:
    if text is None or not text.isascii() or not text.isdecimal() or len(text) > _MAX_DECIMAL_DIGITS:
        return None
    return int(text)


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class LinkSigner:
    """Signs links with one key (STORAGE_LINK_SIGNING_KEY, else one derived from BLOB_UPLOAD_SIGNING_KEY, else a random
    key of this process) and checks local links in constant time. Also signs list cursors (``mac``)."""

    def __init__(self, *, key: bytes | None, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self.shared_key = key is not None
        self._key = hmac.new(key, _LINK_DOMAIN, hashlib.sha256).digest() if key is not None else secrets.token_bytes(32)
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def mac(self, purpose: str, message: str) -> str:
        """A hex HMAC of ``message`` for one ``purpose`` (links, cursors), so one signature never passes for the other."""
        return hmac.new(self._key, f"{purpose}\n{message}".encode(), hashlib.sha256).hexdigest()

    def _signature(self, *, caller: str, key: str, expires: int, name: str, media_type: str) -> str:
        return self.mac("link", f"{caller}\n{key}\n{expires}\n{name}\n{media_type}")

    def link(self, *, store: ObjectStore, base_url: str, caller: str, key: str, name: str, media_type: str) -> Link:
        """A link reading ``key`` for ``ttl_seconds``: presigned on the bucket (S3) or to this server's route (local)."""
        expires = int(self._clock()) + self.ttl_seconds
        if isinstance(store, S3ObjectStore):
            headers = [("response-content-disposition", content_disposition(name, media_type)), ("response-content-type", media_type)]
            url = store.presigned_get_url(key, expires_seconds=self.ttl_seconds, response_headers=headers)
            return Link(url=url, expires_at=_iso(expires))
        query = {
            "caller": caller,
            "expires": str(expires),
            "name": name,
            "type": media_type,
            "signature": self._signature(caller=caller, key=key, expires=expires, name=name, media_type=media_type),
        }
        url = f"{base_url.rstrip('/')}{DOWNLOAD_PREFIX}{quote(key, safe='/')}?{urlencode(query, quote_via=quote)}"
        return Link(url=url, expires_at=_iso(expires))

    def grant(
        self, *, key: str, caller: str | None, expires: str | None, name: str | None, media_type: str | None, signature: str | None
    ) -> LinkGrant:
        """What a followed local link allows, or LinkRefused. The signature is checked before the expiry, so only a
        genuine link is told that it expired."""
        expires_at = _decimal(expires)
        if caller is None or expires_at is None or name is None or media_type is None or signature is None:
            raise LinkRefused("This link is incomplete: ask POST /v1/resolve-storage-url for a fresh one.")
        expected = self._signature(caller=caller, key=key, expires=expires_at, name=name, media_type=media_type).encode("ascii")
        # compared as bytes: compare_digest refuses str holding non-ASCII characters, which a forged signature may hold
        if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")) or key.split("/", 1)[0] != caller:
            detail = "This link is not one this server signed for this file: ask POST /v1/resolve-storage-url for a fresh one."
            if not self.shared_key:
                detail += " (This server signs with a key of its own process: its operator sets STORAGE_LINK_SIGNING_KEY when several run.)"
            raise LinkRefused(detail)
        if expires_at < int(self._clock()):
            raise LinkRefused("This link has expired: ask POST /v1/resolve-storage-url for a fresh one.")
        return LinkGrant(key=key, name=name, media_type=media_type)
