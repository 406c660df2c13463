"""Signed completion callbacks: at-least-once delivery with exponential back-off, every attempt recorded.

Each delivery is a row of the store, claimed through a short lease by whichever process delivers it, so several
processes never send the same attempt twice and a delivery outlives the process that scheduled it.

Deliveries run concurrently (at most CALLBACK_MAX_CONCURRENCY at once per process), and one attempt has one total
deadline (CALLBACK_TIMEOUT_SECONDS: the check of the URL, connecting, sending and reading the answer), of which at
most 64 KiB is read: a receiver that answers one byte at a time, or streams without end, costs one slot for at most
the deadline and never delays another run's callback. An attempt succeeds when a complete 2xx answer arrives within
the deadline. Log lines never show a callback URL's query string (it may carry a token).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from pipelex_server.netguard import Resolver, UrlRefused, redact_client_logs, redact_url, vet_url
from pipelex_server.observability import metrics, tracing_spans
from pipelex_server.settings import Settings
from pipelex_server.store.common import utcnow
from pipelex_server.store.deliveries import DeliveryRepository

logger = logging.getLogger(__name__)

# Attempt n+1 comes CALLBACK_BACKOFF_SECONDS * 4**(n-1) after attempt n, each wait capped at 12 h: with the
# defaults (30 s, 8 attempts) the waits are 30 s, 2 min, 8 min, 32 min, ~2 h, ~8.5 h, 12 h: ~23 h in all.
BACKOFF_MAX_SECONDS = 12 * 3600.0
DELIVERY_LEASE_SECONDS = 60.0  # plus the attempt's deadline: a claimed attempt always ends within its lease
ANSWER_MAX_BYTES = 64 * 1024  # what an attempt reads of the receiver's answer, at most
CLAIM_BATCH = 20


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


@dataclass
class _Answer:
    """How far one attempt got: the status, if one arrived, and why the attempt failed, if it did."""

    status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


class CallbackDeliverer:
    """Delivers due callbacks; woken at once when a run ends, otherwise polls the store for due retries."""

    def __init__(
        self,
        *,
        settings: Settings,
        repository: DeliveryRepository,
        owner: str,
        document_for: Callable[[str], Awaitable[dict[str, Any] | None]],
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.owner = owner
        self.document_for = document_for
        self.timeout_seconds = settings.callback_timeout_seconds
        self.max_concurrency = settings.callback_max_concurrency
        self.resolver = resolver or Resolver(timeout_seconds=settings.dns_timeout_seconds, max_concurrency=settings.dns_max_concurrency)
        self._lease_seconds = DELIVERY_LEASE_SECONDS + self.timeout_seconds
        self._slots = asyncio.Semaphore(self.max_concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        redact_client_logs()
        self._wake = asyncio.Event()
        self._recorded = asyncio.Condition()
        self.attempts_recorded = 0
        self._task: asyncio.Task[None] | None = None
        # no kept-alive connections: a pinned connection is keyed by IP, and a reused TLS connection would skip the
        # certificate check for another host name on the same address
        self._client = httpx.AsyncClient(
            timeout=self.timeout_seconds,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
            verify=ssl_context if ssl_context is not None else True,
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="callback-deliverer")

    async def close(self) -> None:
        tasks = [task for task in (self._task, *self._in_flight) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._client.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def run_ended(self, run_id: str) -> None:
        """In-process mode: a run ended, so its undelivered callbacks are due now."""
        if await self.repository.schedule_deliveries(run_id, utcnow()):
            self.wake()

    async def _loop(self) -> None:
        while True:
            claimed = 0
            try:
                claimed = await self._dispatch_due()
                next_due = await self.repository.next_delivery_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("callback delivery loop failed")
                next_due = None
            if next_due is None or len(self._in_flight) >= self.max_concurrency:
                delay = 5.0  # an attempt that ends, or a run that ends, wakes the loop
            else:
                delay = max(0.05, min(5.0, (next_due - utcnow()).total_seconds()))
                if delay <= 0.05 and not claimed:
                    delay = 1.0  # what is due is leased (in flight here or elsewhere): our own attempts wake us
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()

    async def _dispatch_due(self) -> int:
        """Claim as many due deliveries as there are free slots and start their attempts, without waiting for them."""
        free = self.max_concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        claimed = await self.repository.claim_due_deliveries(self.owner, utcnow(), self._lease_seconds, limit=min(free, CLAIM_BATCH))
        for delivery in claimed:
            task = asyncio.create_task(self._attempt_logged(delivery), name=f"callback-{delivery['id']}")
            self._in_flight.add(task)
            task.add_done_callback(self._attempt_ended)
        return len(claimed)

    def _attempt_ended(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # a slot is free

    async def _attempt_logged(self, delivery: dict[str, Any]) -> None:
        try:
            await self._attempt(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("callback attempt for run %s failed unexpectedly", delivery["run_id"])

    async def deliver_due(self, *, run_id: str | None = None, limit: int = CLAIM_BATCH) -> int:
        """One attempt of each due delivery (of one run, with ``run_id``) this process can claim, made concurrently
        and awaited; returns how many."""
        claimed = await self.repository.claim_due_deliveries(self.owner, utcnow(), self._lease_seconds, limit=limit, run_id=run_id)
        if claimed:
            await asyncio.gather(*(self._attempt_logged(delivery) for delivery in claimed))
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
        async with self._slots:
            run_id = delivery["run_id"]
            document = await self.document_for(run_id)
            attempts = int(delivery["attempts"]) + 1
            if document is None:
                answer = _Answer(error="the run no longer exists")
            else:
                # signed with the id the caller knows (the run document's), not the internal key
                with tracing_spans.callback_span(delivery["run_id"], delivery["url"], attempts) as span:  # docs/tracing.md
                    answer = await self._post(delivery["url"], document["pipeline_run_id"], document)
                    tracing_spans.callback_answered(span, answer.status, answer.error)
            values: dict[str, Any] = {"attempts": attempts, "last_status": answer.status, "last_error": answer.error}
            metrics.callback_attempt(delivered=answer.delivered, status=answer.status)
            shown = redact_url(delivery["url"])
            run_id = document["pipeline_run_id"] if document is not None else run_id  # logs name the run as its caller does
            if answer.delivered:
                values.update(delivered_at=utcnow(), next_attempt_at=None)
            elif document is None or attempts >= int(delivery["max_attempts"]):
                values["next_attempt_at"] = None
                logger.warning("callback to %s for run %s abandoned after %d attempts: %s", shown, run_id, attempts, answer.error)
            else:
                values["next_attempt_at"] = utcnow() + timedelta(seconds=backoff_seconds(attempts, self.settings.callback_backoff_seconds))
                logger.info("callback attempt %d to %s for run %s failed: %s", attempts, shown, run_id, answer.error)
            await self.repository.record_attempt(delivery["id"], self.owner, values)
        async with self._recorded:
            self.attempts_recorded += 1
            self._recorded.notify_all()

    async def wait_attempts_recorded(self, count: int, timeout: float = 30) -> None:
        """Wait until this process has recorded ``count`` attempts in all (for tests and tooling)."""
        async with self._recorded:
            await asyncio.wait_for(self._recorded.wait_for(lambda: self.attempts_recorded >= count), timeout)

    async def _post(self, url: str, run_id: str, document: dict[str, Any]) -> _Answer:
        """One attempt, under one deadline for all of it."""
        answer = _Answer()
        secret = self.settings.completion_callback_secret
        if secret is None:
            answer.error = "no COMPLETION_CALLBACK_SECRET is configured"
            return answer
        late = f"no complete answer within {self.timeout_seconds:g} seconds (CALLBACK_TIMEOUT_SECONDS)"
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await self._send(answer, url, run_id, document, secret.get_secret_value())
        except TimeoutError:
            answer.error = late
        except UrlRefused as exc:
            answer.error = f"refused: {exc}"
        except httpx.TimeoutException:
            answer.error = late
        except httpx.HTTPError as exc:
            answer.error = f"{type(exc).__name__}"
        return answer

    async def _send(self, answer: _Answer, url: str, run_id: str, document: dict[str, Any], key: str) -> None:
        vetted = await vet_url(url, allow_private=self.settings.callback_allow_private_hosts, resolver=self.resolver)
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        timestamp = int(time.time())
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
        tracing_spans.callback_headers(headers)  # traceparent of the attempt's span, when tracing is on
        async with self._client.stream("POST", pinned_url, content=body, headers=headers, extensions=extensions) as response:
            answer.status = response.status_code
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received > ANSWER_MAX_BYTES:
                    answer.error = f"the answer was longer than {ANSWER_MAX_BYTES // 1024} KiB"
                    return
        if not 200 <= response.status_code < 300:
            answer.error = f"HTTP {response.status_code}"


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
