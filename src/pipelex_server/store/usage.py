"""Aggregates over the run store: a caller's usage (runs, tokens, cost) in a time window, and the fleet's queued and
running runs for the metrics.

Usage is summed from each run's ``usage`` column (the very figures its run document shows), read in pages and folded
in Python: the JSON functions of SQLite and PostgreSQL differ, and one portable query keeps the two stores in step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.common import ACTIVE_STATES
from pipelex_server.store.tables import runs

PAGE_ROWS = 1000


class UsageRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def runs_between(self, caller_id: str, start: datetime, end: datetime) -> AsyncIterator[dict[str, Any]]:
        """The caller's runs created in ``[start, end)``, oldest first: ``created_at``, ``pipe_code``, ``state``, ``usage``."""
        columns = (runs.c.id, runs.c.created_at, runs.c.pipe_code, runs.c.state, runs.c.usage)
        after: tuple[datetime, str] | None = None
        while True:
            statement = sa.select(*columns).where(runs.c.caller_id == caller_id, runs.c.created_at >= start, runs.c.created_at < end)
            if after is not None:
                statement = statement.where(
                    sa.or_(runs.c.created_at > after[0], sa.and_(runs.c.created_at == after[0], runs.c.id > after[1]))
                )
            statement = statement.order_by(runs.c.created_at, runs.c.id).limit(PAGE_ROWS)
            async with self.engine.connect() as connection:
                rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
            for row in rows:
                yield row
            if len(rows) < PAGE_ROWS:
                return
            after = (rows[-1]["created_at"], rows[-1]["id"])

    async def active_counts(self) -> dict[str, int]:
        """Runs queued (STARTED) and running (RUNNING) now, across every process sharing the store."""
        statement = sa.select(runs.c.state, sa.func.count()).where(runs.c.state.in_(ACTIVE_STATES)).group_by(runs.c.state)
        async with self.engine.connect() as connection:
            counts = {state: int(count) for state, count in (await connection.execute(statement)).all()}
        return {state: counts.get(state, 0) for state in ACTIVE_STATES}
