"""Callback deliveries: the rows each run's callbacks are recorded in, their schedule, claims and attempts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.tables import deliveries, runs


class DeliveryRepository:
    """A run's deliveries are inserted with the run (``RunRepository.insert_run``); everything after is here."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def deliveries_of(self, run_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as connection:
            result = await connection.execute(sa.select(deliveries).where(deliveries.c.run_id == run_id).order_by(deliveries.c.position))
            return [dict(row) for row in result.mappings()]

    async def deliveries_of_runs(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        if not run_ids:
            return found
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(deliveries).where(deliveries.c.run_id.in_(list(run_ids))).order_by(deliveries.c.position)
            )
            for row in result.mappings():
                found.setdefault(row["run_id"], []).append(dict(row))
        return found

    async def schedule_deliveries(self, run_id: str, when: datetime) -> int:
        """Make the run's undelivered callbacks due at ``when``; returns how many."""
        statement = sa.update(deliveries).where(deliveries.c.run_id == run_id, deliveries.c.delivered_at.is_(None))
        async with self.engine.begin() as connection:
            result = await connection.execute(statement.values(next_attempt_at=when))
        return int(result.rowcount or 0)

    async def grant_redelivery(self, run_id: str, when: datetime, *, extra_attempts: int, max_redeliveries: int) -> int | None:
        """Count one more redelivery of the run's callbacks and schedule them all again, each with a fresh budget of
        ``extra_attempts``; returns how many were scheduled (0: the run has none, and nothing is counted), or None
        when the run has had ``max_redeliveries`` already (nothing changes)."""
        has_deliveries = sa.exists().where(deliveries.c.run_id == run_id)
        async with self.engine.begin() as connection:
            # a write first (the compare-and-set on the count), so concurrent requests cannot both take the last one
            counted = await connection.execute(
                sa.update(runs)
                .where(runs.c.id == run_id, runs.c.redeliveries < max_redeliveries, has_deliveries)
                .values(redeliveries=runs.c.redeliveries + 1)
            )
            if not counted.rowcount:
                return 0 if not (await connection.execute(sa.select(has_deliveries))).scalar() else None
            scheduled = await connection.execute(
                sa.update(deliveries)
                .where(deliveries.c.run_id == run_id)
                .values(
                    next_attempt_at=when,
                    delivered_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    max_attempts=deliveries.c.attempts + extra_attempts,
                )
            )
        return int(scheduled.rowcount or 0)

    async def claim_due_deliveries(
        self, owner: str, now: datetime, lease_seconds: float, limit: int = 20, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Claim due deliveries for this process (compare-and-set on their lease), so each attempt is made once."""
        async with self.engine.connect() as connection:
            candidates = (
                await connection.execute(
                    sa.select(deliveries.c.id)
                    .where(
                        deliveries.c.run_id == run_id if run_id is not None else sa.true(),
                        deliveries.c.attempts < deliveries.c.max_attempts,
                        deliveries.c.delivered_at.is_(None),
                        deliveries.c.next_attempt_at.is_not(None),
                        deliveries.c.next_attempt_at <= now,
                        sa.or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at < now),
                    )
                    .order_by(deliveries.c.next_attempt_at)
                    .limit(limit)
                )
            ).scalars()
            candidate_ids = list(candidates)
        claimed: list[dict[str, Any]] = []
        until = now + timedelta(seconds=lease_seconds)
        for delivery_id in candidate_ids:
            async with self.engine.begin() as connection:
                result = await connection.execute(
                    sa.update(deliveries)
                    .where(
                        deliveries.c.id == delivery_id,
                        deliveries.c.delivered_at.is_(None),
                        sa.or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at < now),
                    )
                    .values(lease_owner=owner, lease_expires_at=until)
                )
                if result.rowcount:
                    row = (await connection.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id))).mappings().first()
                    if row:
                        claimed.append(dict(row))
        return claimed

    async def record_attempt(self, delivery_id: int, owner: str, values: dict[str, Any]) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                sa.update(deliveries)
                .where(deliveries.c.id == delivery_id, deliveries.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None, **values)
            )

    async def next_delivery_due(self) -> datetime | None:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.delivered_at.is_(None), deliveries.c.next_attempt_at.is_not(None)
                )
            )
            value = result.scalar_one()
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
