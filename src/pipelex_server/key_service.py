"""The API key service (AUTH_MODE=keys): mint, list, rotate and revoke a caller's keys, and find the key of a request.

A secret is ``plx_sk_`` + 43 URL-safe characters (256 random bits). Only its SHA-256 is stored (a fast hash is
enough for a high-entropy secret; nothing to brute-force); its first characters are kept as ``prefix`` so a list
can show which key is which. The secret is returned once, by create and rotate, and never logged. A request's key is
looked up in the database on every request (no in-process cache), so a rotation or revocation made by any process
stops the old secret at once. ``last_used_at`` is written at most once a minute per key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipelex_server.settings import Settings
from pipelex_server.store.api_keys import ApiKeyRepository
from pipelex_server.store.common import utcnow

SECRET_PREFIX = "plx_sk_"  # noqa: S105  # the public marker of a key, not a secret
PREFIX_SHOWN_CHARS = len(SECRET_PREFIX) + 8
LAST_USED_EVERY = timedelta(minutes=1)
_TOUCHED_MEMORY = 10_000  # keys whose last write this process remembers (to skip even the conditional UPDATE)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _new_key_id() -> str:
    return "ak_" + secrets.token_hex(12)


@dataclass(frozen=True)
class KeyIdentity:
    """The key a request authenticated with (never its secret)."""

    key_id: str
    caller_id: str
    label: str
    prefix: str


@dataclass(frozen=True)
class KeyCheck:
    """What a presented secret is: a live key's identity, an expired key (``expired``), or nothing known (both None)."""

    identity: KeyIdentity | None = None
    expired: bool = False


class ApiKeyService:
    """What the key routes, the CLI and authentication call."""

    def __init__(self, *, settings: Settings, repository: ApiKeyRepository) -> None:
        self.settings = settings
        self.repository = repository
        self._touched: dict[str, float] = {}

    @property
    def max_per_caller(self) -> int:
        return self.settings.api_keys_max_per_caller

    def default_expiry(self, now: datetime) -> datetime | None:
        ttl = self.settings.api_key_ttl_days
        return now + timedelta(days=ttl) if ttl else None

    async def create(self, caller_id: str, label: str, *, expires_at: datetime | None = None) -> tuple[dict[str, Any], str] | None:
        """A new key for the caller and its secret (shown once); None when the caller is at its cap of live keys."""
        now = utcnow()
        secret = _new_secret()
        row = {
            "id": _new_key_id(),
            "caller_id": caller_id,
            "label": label,
            "prefix": secret[:PREFIX_SHOWN_CHARS],
            "secret_hash": hash_secret(secret),
            "created_at": now,
            "expires_at": expires_at or self.default_expiry(now),
        }
        if not await self.repository.insert_capped(row, cap=self.max_per_caller, now=now):
            return None
        return {**row, "rotated_at": None, "last_used_at": None}, secret

    async def list(self, caller_id: str) -> list[dict[str, Any]]:
        return await self.repository.list_for(caller_id)

    async def rotate(self, caller_id: str, key_id: str) -> tuple[dict[str, Any], str] | None:
        """A new secret for one of the caller's keys (same id, label and expiry); the old secret stops at once. None
        when the caller has no such key."""
        secret = _new_secret()
        self._touched.pop(key_id, None)
        row = await self.repository.replace_secret(
            caller_id, key_id, secret_hash=hash_secret(secret), prefix=secret[:PREFIX_SHOWN_CHARS], now=utcnow()
        )
        return (row, secret) if row else None

    async def revoke(self, caller_id: str, key_id: str) -> bool:
        return await self.repository.delete(caller_id, key_id)

    async def check(self, secret: str) -> KeyCheck:
        """The key a presented secret belongs to. The lookup is by the secret's hash (unique index), and the stored
        hash is then compared in constant time; an expired key is told apart, for its own 401."""
        if not secret.startswith(SECRET_PREFIX) or len(secret) > 256:
            return KeyCheck()
        presented = hash_secret(secret)
        row = await self.repository.find_by_hash(presented)
        if row is None or not hmac.compare_digest(row["secret_hash"].encode(), presented.encode()):
            return KeyCheck()
        now = utcnow()
        if row["expires_at"] is not None and row["expires_at"] <= now:
            return KeyCheck(expired=True)
        await self._record_use(row["id"], now)
        return KeyCheck(identity=KeyIdentity(key_id=row["id"], caller_id=row["caller_id"], label=row["label"], prefix=row["prefix"]))

    async def _record_use(self, key_id: str, now: datetime) -> None:
        """``last_used_at``, cheaply: this process skips keys it wrote in the last minute; the UPDATE itself is
        conditional, so several processes write a key at most about once a minute each."""
        clock = time.monotonic()
        last = self._touched.get(key_id)
        if last is not None and clock - last < LAST_USED_EVERY.total_seconds():
            return
        if len(self._touched) >= _TOUCHED_MEMORY:
            self._touched.clear()
        self._touched[key_id] = clock
        await self.repository.touch(key_id, now=now, every=LAST_USED_EVERY)
