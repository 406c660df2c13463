"""Uploaded files' records (the bytes are in the object store, under the caller's scope)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.common import newest_first
from pipelex_server.store.tables import uploads


class UploadRepository:
    """Uploaded files' records (the bytes are in the object store, under the caller's scope)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, row: dict[str, Any]) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(uploads.insert(), row)

    async def get(self, upload_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(sa.select(uploads).where(uploads.c.id == upload_id))).mappings().first()
        return dict(row) if row else None

    async def delete(self, upload_id: str, caller_id: str) -> dict[str, Any] | None:
        """Delete one of the caller's uploads; returns the deleted record (None when there was none)."""
        async with self.engine.begin() as connection:
            row = (
                (await connection.execute(sa.select(uploads).where(uploads.c.id == upload_id, uploads.c.caller_id == caller_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            await connection.execute(sa.delete(uploads).where(uploads.c.id == upload_id))
        return dict(row)

    async def list_for(self, caller_id: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        return await newest_first(self.engine, sa.select(uploads).where(uploads.c.caller_id == caller_id), uploads, limit, cursor)

    async def purge_before(self, cutoff: datetime, limit: int = 500) -> list[dict[str, Any]]:
        async with self.engine.begin() as connection:
            rows = [
                dict(row)
                for row in (await connection.execute(sa.select(uploads).where(uploads.c.created_at < cutoff).limit(limit))).mappings()
            ]
            if rows:
                await connection.execute(sa.delete(uploads).where(uploads.c.id.in_([row["id"] for row in rows])))
        return rows
