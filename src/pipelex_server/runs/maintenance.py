"""Background loops apart from request handling: lease renewal, the expired-lease sweeper, the cancellation watch
(in-process mode), and the retention purge."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from pipelex_server.engine.runtime import Engine
from pipelex_server.runs.lifecycle import RunLifecycle
from pipelex_server.runs.stored import delete_stored
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectStore
from pipelex_server.store.common import lease_deadline, utcnow
from pipelex_server.store.runs import RunRepository

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5
RETENTION_SWEEP_SECONDS = 3600.0


class LeaseKeeper:
    """In-process mode: renews the leases of the runs this process executes, settles runs whose owner stopped renewing
    theirs (re-queued here if they never started, ERROR otherwise), and stops the runs here whose cancellation was
    asked of another process."""

    def __init__(
        self,
        *,
        settings: Settings,
        repository: RunRepository,
        lifecycle: RunLifecycle,
        engine: Engine,
        running: Mapping[str, asyncio.Task[Any]],
        requeue: Callable[[str], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.lifecycle = lifecycle
        self.engine = engine
        self.running = running
        self.requeue = requeue

    def start(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._renew_leases_forever(), name="lease-renewal"),
            asyncio.create_task(self._settle_expired_forever(), name="lease-sweeper"),
            asyncio.create_task(self._watch_cancellations_forever(), name="cancel-watch"),
        ]

    async def _renew_leases_forever(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.repository.renew_leases(
                    self.lifecycle.instance_id, list(self.running), lease_deadline(self.settings.lease_seconds)
                )
            except Exception:
                logger.exception("lease renewal failed")

    async def _settle_expired_forever(self) -> None:
        interval = self.settings.lease_seconds / 2
        await self.engine.ready.wait()  # re-queued runs execute at once: not before the runtime is up
        while True:
            try:
                await self.settle_expired()
            except Exception:
                logger.exception("settling expired runs failed")
            await asyncio.sleep(interval * (0.75 + random.random() / 2))  # noqa: S311 - jitter, not security

    async def settle_expired(self) -> list[str]:
        """Settle runs whose owner stopped renewing its lease. Never touches a run with a live lease."""
        now = utcnow()
        settled: list[str] = []
        for row in await self.repository.expired_runs(now):
            if await self.lifecycle.settle_expired(row, now):
                settled.append(row["id"])
                if row["state"] == "STARTED":
                    await self.requeue(row["id"])
        return settled

    async def _watch_cancellations_forever(self) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not self.running:
                continue
            try:
                for run_id in await self.repository.cancel_requested_among(list(self.running)):
                    task = self.running.get(run_id)
                    if task is not None:
                        task.cancel()
            except Exception:
                logger.exception("watching for cancellations failed")


class RetentionPurge:
    """Removes ended runs (with their events, deliveries and stored data) RUN_RETENTION_DAYS after they finished."""

    def __init__(self, *, settings: Settings, repository: RunRepository, store: ObjectStore) -> None:
        self.settings = settings
        self.repository = repository
        self.store = store

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._purge_forever(), name="retention")

    async def purge_expired(self) -> list[str]:
        """Remove ended runs that finished more than RUN_RETENTION_DAYS ago; returns their public ids."""
        days = self.settings.run_retention_days
        if not days:
            return []
        purged: list[str] = []
        while batch := await self.repository.purge_terminal_before(utcnow() - timedelta(days=days)):
            for _key, caller_id, public_id in batch:
                await delete_stored(self.store, caller_id, public_id)
                purged.append(public_id)
        if purged:
            logger.info("purged %d runs older than %g days", len(purged), days)
        return purged

    async def _purge_forever(self) -> None:
        while True:
            try:
                await self.purge_expired()
            except Exception:
                logger.exception("retention purge failed")
            await asyncio.sleep(RETENTION_SWEEP_SECONDS)
