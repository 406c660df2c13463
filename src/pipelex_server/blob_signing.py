"""Signed, expiring upload targets for the protocol's blob uploads: making a target's query, and checking one.

`POST /v1/blobs/missing` names, for each blob a caller lacks, a URL of `PUT /v1/blobs/{sha256}` whose query carries
the caller's scope, the blob's size, an expiry and an HMAC-SHA256 over the four with the server's key. The upload
needs no bearer token: the signature is the permission, for one hash and one size, in one scope, for a while. A
leaked target lets its holder upload only the bytes the hash names, which the route checks.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipelex_server.errors import ApiProblem

SCOPE_PARAM = "scope"
SIZE_PARAM = "size"
EXPIRES_PARAM = "expires"
SIGNATURE_PARAM = "signature"
# What an upload refused for its target lacks, as the `requirement` of its `auth.forbidden` (the official wording).
SIGNED_TARGET_REQUIREMENT = "signed_upload_target"
_SCOPE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_MAX_SCOPE_CHARS = 128
_MAX_DECIMAL_DIGITS = 20  # an expiry or a size; longer text is no target this server signed


@dataclass(frozen=True)
class UploadGrant:
    """What a checked upload target allows: storing the bytes of ``sha256``, ``size`` long, under ``scope``."""

    scope: str
    sha256: str
    size: int


def _decimal(text: str | None) -> int | None:
    if text is None or not text.isascii() or not text.isdecimal() or len(text) > _MAX_DECIMAL_DIGITS:
        return None
    return int(text)


def _forbidden(detail: str) -> ApiProblem:
    return ApiProblem(
        status=403,
        code="auth.forbidden",
        title="The credential does not permit this",
        type_uri="https://mthds.ai/errors/auth.forbidden",
        detail=detail,
        params={"requirement": SIGNED_TARGET_REQUIREMENT},
    )


class UploadSigner:
    """Signs upload targets with one key and checks them in constant time.

    ``key`` is BLOB_UPLOAD_SIGNING_KEY, or None for a random key of this process (then a target is honoured only by
    the process that named it)."""

    def __init__(self, *, key: bytes | None, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self.shared_key = key is not None
        self._key = key if key is not None else secrets.token_bytes(32)
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def signature(self, *, scope: str, sha256: str, size: int, expires: int) -> str:
        message = f"{scope}\n{sha256}\n{size}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def query(self, *, scope: str, sha256: str, size: int) -> dict[str, str]:
        """The query of a target for one blob in one scope, valid for ``ttl_seconds`` from now."""
        expires = int(self._clock()) + self.ttl_seconds
        signature = self.signature(scope=scope, sha256=sha256, size=size, expires=expires)
        return {SCOPE_PARAM: scope, SIZE_PARAM: str(size), EXPIRES_PARAM: str(expires), SIGNATURE_PARAM: signature}

    def grant(self, *, sha256: str, scope: str | None, size: str | None, expires: str | None, signature: str | None) -> UploadGrant:
        """The upload a target's query allows, or a 403 ``auth.forbidden`` (requirement: a signed upload target).

        Every part of the query is the caller's text: anything this server would not have signed is refused, never an
        error. The signature is checked before the expiry, so only a genuine target is told that it expired."""
        size_value, expires_at = _decimal(size), _decimal(expires)
        well_formed = (
            scope is not None
            and 0 < len(scope) <= _MAX_SCOPE_CHARS
            and set(scope) <= _SCOPE_CHARS
            and size_value is not None
            and expires_at is not None
            and signature is not None
        )
        if not well_formed:
            raise _forbidden("This upload carries no valid target: ask POST /v1/blobs/missing for one, and upload to the URL it names.")
        assert scope is not None and size_value is not None and expires_at is not None and signature is not None
        expected = self.signature(scope=scope, sha256=sha256, size=size_value, expires=expires_at).encode("ascii")
        # compared as bytes: compare_digest refuses str holding non-ASCII characters, which a forged signature may hold
        if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")):
            detail = "This upload's target is not one this server signed: ask POST /v1/blobs/missing for a target, and upload to it."
            if not self.shared_key:
                detail += " (This server signs with a key of its own process: its operator sets BLOB_UPLOAD_SIGNING_KEY when several run.)"
            raise _forbidden(detail)
        if expires_at < int(self._clock()):
            raise _forbidden("This upload's target has expired: ask POST /v1/blobs/missing for a new one, and upload before it expires.")
        return UploadGrant(scope=scope, sha256=sha256, size=size_value)
