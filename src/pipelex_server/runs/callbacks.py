"""Signed completion callbacks: at-least-once delivery with exponential back-off, every attempt recorded.

Each delivery is a row of the store, claimed through a short lease by whichever process delivers it, so several
processes never send the same attempt twice and a delivery outlives the process that scheduled it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from pipelex_server.netguard import UrlRefused, vet_url
from pipelex_server.settings import Settings
from pipelex_server.store.repository import RunRepository, utcnow

logger = logging.getLogger(__name__)

# Attempt n+1 comes CALLBACK_BACKOFF_SECONDS * 4**(n-1) after attempt n, each wait capped at 12 h: with the
# defaults (30 s, 8 attempts) the waits are 30 s, 2 min, 8 min, 32 min, ~2 h, ~8.5 h, 12 h: ~23 h in all.
BACKOFF_MAX_SECONDS = 12 * 3600.0
DELIVERY_TIMEOUT_SECONDS = 10.0
DELIVERY_LEASE_SECONDS = 60.0


def hmac_key(secret: str) -> bytes:
    """The secret's UTF-8 bytes, or the base64-decoded rest of a Standard Webhooks ``whsec_`` secret."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def completion_signature(secret: str, run_id: str) -> str:
    """``X-Completion-Signature``: hex HMAC-SHA256 of the run id (compatible with existing receivers)."""
    return hmac.new(hmac_key(secret), run_id.encode(), hashlib.sha256).hexdigest()


def webhook_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks ``webhook-signature``: ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(hmac_key(secret), signed, hashlib.sha256).digest()).decode()


def backoff_seconds(attempts: int, base: float) -> float:
    return min(base * 4 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS)


class CallbackDeliverer:
    """Delivers due callbacks; woken at once when a run ends, otherwise polls the store for due retries."""

    def __init__(
        self,
        *,
        settings: Settings,
        repository: RunRepository,
        owner: str,
        document_for: Callable[[str], Awaitable[dict[str, Any] | None]],
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.owner = owner
        self.document_for = document_for
        self._wake = asyncio.Event()
        self._recorded = asyncio.Condition()
        self.attempts_recorded = 0
        self._task: asyncio.Task[None] | None = None
        # no kept-alive connections: a pinned connection is keyed by IP, and a reused TLS connection would skip the
        # certificate check for another host name on the same address
        self._client = httpx.AsyncClient(
            timeout=DELIVERY_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="callback-deliverer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._client.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.deliver_due()
                next_due = await self.repository.next_delivery_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("callback delivery loop failed")
                next_due = None
            delay = 5.0 if next_due is None else max(0.05, min(5.0, (next_due - utcnow()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()

    async def deliver_due(self, *, run_id: str | None = None, limit: int = 20) -> int:
        """One attempt of each due delivery (of one run, with ``run_id``) this process can claim; returns how many."""
        claimed = await self.repository.claim_due_deliveries(self.owner, utcnow(), DELIVERY_LEASE_SECONDS, limit=limit, run_id=run_id)
        if claimed:
            await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        return len(claimed)

    async def deliver_run(self, run_id: str) -> int:
        """One attempt of each of the run's due deliveries (Temporal's callback activity); returns how many are
        neither delivered nor out of attempts."""
        await self.deliver_due(run_id=run_id, limit=100)
        return sum(
            1
            for delivery in await self.repository.deliveries_of(run_id)
            if delivery["delivered_at"] is None and int(delivery["attempts"]) < int(delivery["max_attempts"])
        )

    async def _attempt(self, delivery: dict[str, Any]) -> None:
        run_id = delivery["run_id"]
        document = await self.document_for(run_id)
        attempts = int(delivery["attempts"]) + 1
        status: int | None = None
        error: str | None = None
        if document is None:
            error = "the run no longer exists"
        else:
            status, error = await self._post(delivery["url"], run_id, document)
        delivered = status is not None and 200 <= status < 300
        values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error}
        if delivered:
            values.update(delivered_at=utcnow(), next_attempt_at=None)
        elif document is None or attempts >= int(delivery["max_attempts"]):
            values["next_attempt_at"] = None
            logger.warning("callback to %s for run %s abandoned after %d attempts", delivery["url"], run_id, attempts)
        else:
            values["next_attempt_at"] = utcnow() + timedelta(seconds=backoff_seconds(attempts, self.settings.callback_backoff_seconds))
        await self.repository.record_attempt(delivery["id"], self.owner, values)
        async with self._recorded:
            self.attempts_recorded += 1
            self._recorded.notify_all()

    async def wait_attempts_recorded(self, count: int, timeout: float = 30) -> None:
        """Wait until this process has recorded ``count`` attempts in all (for tests and tooling)."""
        async with self._recorded:
            await asyncio.wait_for(self._recorded.wait_for(lambda: self.attempts_recorded >= count), timeout)

    async def _post(self, url: str, run_id: str, document: dict[str, Any]) -> tuple[int | None, str | None]:
        secret = self.settings.completion_callback_secret
        if secret is None:
            return None, "no COMPLETION_CALLBACK_SECRET is configured"
        try:
            vetted = await vet_url(url, allow_private=self.settings.callback_allow_private_hosts)
        except UrlRefused as exc:
            return None, f"refused: {exc}"
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        timestamp = int(time.time())
        key = secret.get_secret_value()
        pinned_url, headers, extensions = vetted.pinned()
        headers.update(
            {
                "Content-Type": "application/json",
                "User-Agent": "pipelex-server-callbacks",
                "X-Completion-Signature": completion_signature(key, run_id),
                "webhook-id": run_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": webhook_signature(key, run_id, timestamp, body),
            }
        )
        try:
            response = await self._client.post(pinned_url, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}"
        return response.status_code, None if response.is_success else f"HTTP {response.status_code}"


def delivery_record(delivery: dict[str, Any]) -> dict[str, Any]:
    """A delivery as the run document shows it."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value else None

    return {
        "url": delivery["url"],
        "attempts": int(delivery["attempts"]),
        "last_status": delivery["last_status"],
        "last_error": delivery["last_error"],
        "delivered_at": iso(delivery["delivered_at"]),
        "next_attempt_at": iso(delivery["next_attempt_at"]),
    }
