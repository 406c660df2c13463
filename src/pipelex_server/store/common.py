"""What every repository shares: the run states the queries know, the clock, event rows, and page cursors."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "ERROR")
ACTIVE_STATES = ("STARTED", "RUNNING")

Event = dict[str, Any]  # {"seq", "event", "data", "at"}


def utcnow() -> datetime:
    return datetime.now(UTC)


def lease_deadline(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


class InvalidCursor(ValueError):
    pass


def encode_cursor(created_at: datetime, run_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, run_id = json.loads(raw)
        return datetime.fromisoformat(created), str(run_id)
    except (ValueError, TypeError) as exc:
        raise InvalidCursor(cursor) from exc


async def newest_first(
    engine: AsyncEngine, statement: sa.Select[Any], table: sa.Table, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of rows, newest first (created_at, then id), and the cursor of the next page (None on the last)."""
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        statement = statement.where(sa.or_(table.c.created_at < created_at, sa.and_(table.c.created_at == created_at, table.c.id < row_id)))
    statement = statement.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)
    async with engine.connect() as connection:
        rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return rows, next_cursor
