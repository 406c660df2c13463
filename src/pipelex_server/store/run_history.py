"""The platform's run history reads (``GET /v1/runs``): one page of a caller's runs, newest first, by method, time
range and states. Read-only; the run lifecycle stays the one writer of runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.tables import runs


class RunHistoryRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def page(
        self,
        *,
        caller_id: str,
        method_id: str | None,
        states: Sequence[str] | None,
        created_from: datetime | None,
        created_to: datetime | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        statement = sa.select(runs).where(runs.c.caller_id == caller_id)
        if method_id is not None:
            statement = statement.where(runs.c.method_id == method_id) if "method_id" in runs.c else statement.where(sa.false())
        if states is not None:
            statement = statement.where(runs.c.state.in_(list(states)))
        if created_from is not None:
            statement = statement.where(runs.c.created_at >= created_from)
        if created_to is not None:
            statement = statement.where(runs.c.created_at <= created_to)
        if after is not None:
            created_at, run_key = after
            statement = statement.where(
                sa.or_(runs.c.created_at < created_at, sa.and_(runs.c.created_at == created_at, runs.c.id < run_key))
            )
        statement = statement.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit + 1)
        async with self.engine.connect() as connection:
            rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
        return rows[:limit], len(rows) > limit
