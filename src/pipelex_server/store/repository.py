"""Run persistence. The run service is its only caller (one writer of run state)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.tables import run_events, runs

TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "ERROR")
ACTIVE_STATES = ("STARTED", "RUNNING")


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))

    async def insert(self, row: dict[str, Any]) -> bool:
        """Insert a new run; False when the id exists already (idempotent replay or conflict)."""
        try:
            async with self.engine.begin() as connection:
                await connection.execute(runs.insert().values(**row))
        except IntegrityError:
            return False
        return True

    async def get(self, run_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            result = await connection.execute(sa.select(runs).where(runs.c.id == run_id))
            row = result.mappings().first()
        return dict(row) if row else None

    async def update(self, run_id: str, *, from_states: Sequence[str] | None = None, **values: Any) -> bool:
        """Update a run, only if it is still in one of ``from_states`` (the state-machine guard)."""
        values.setdefault("updated_at", utcnow())
        statement = sa.update(runs).where(runs.c.id == run_id)
        if from_states is not None:
            statement = statement.where(runs.c.state.in_(list(from_states)))
        async with self.engine.begin() as connection:
            result = await connection.execute(statement.values(**values))
        return bool(result.rowcount)

    async def renew_leases(self, owner: str, run_ids: Sequence[str], until: datetime) -> int:
        if not run_ids:
            return 0
        async with self.engine.begin() as connection:
            result = await connection.execute(
                sa.update(runs)
                .where(runs.c.id.in_(list(run_ids)), runs.c.lease_owner == owner, runs.c.state.in_(ACTIVE_STATES))
                .values(lease_expires_at=until)
            )
        return int(result.rowcount or 0)

    async def expired_runs(self, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(runs.c.id, runs.c.state, runs.c.lease_owner, runs.c.lease_expires_at)
                .where(runs.c.state.in_(ACTIVE_STATES), runs.c.lease_expires_at < now)
                .limit(limit)
            )
            return [dict(row) for row in result.mappings()]

    async def settle_expired(self, run_id: str, now: datetime, values: dict[str, Any]) -> bool:
        """Settle a run whose lease expired, unless its owner renewed it meanwhile (compare-and-set on the lease)."""
        async with self.engine.begin() as connection:
            result = await connection.execute(
                sa.update(runs)
                .where(runs.c.id == run_id, runs.c.state.in_(ACTIVE_STATES), runs.c.lease_expires_at < now)
                .values(updated_at=now, **values)
            )
        return bool(result.rowcount)

    async def append_event(self, run_id: str, seq: int, event: str, data: dict[str, Any], at: datetime) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(run_events.insert().values(run_id=run_id, seq=seq, event=event, data=data, at=at))

    async def count_runs(self) -> int:
        async with self.engine.connect() as connection:
            return int((await connection.execute(sa.select(sa.func.count()).select_from(runs))).scalar_one())


def lease_deadline(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
