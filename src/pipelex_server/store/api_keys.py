"""API key records (AUTH_MODE=keys): a caller's keys by the SHA-256 of their secrets, never the secrets themselves."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.tables import api_keys

_INSERTED_COLUMNS = ("id", "caller_id", "label", "prefix", "secret_hash", "created_at", "expires_at")


class ApiKeyRepository:
    """A caller's API keys. Every read and write but ``find_by_hash`` is scoped to the caller: another caller's key
    id finds nothing, as an unknown id does."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert_capped(self, row: dict[str, Any], *, cap: int, now: datetime) -> bool:
        """Insert the key unless its caller already holds ``cap`` live (unexpired) keys; False when refused.

        One INSERT ... SELECT ... WHERE count < cap (atomic on SQLite, which runs one writer at a time); PostgreSQL
        first takes a transaction lock on the caller, so two concurrent creates cannot both pass the count."""
        live = (
            sa.select(sa.func.count())
            .select_from(api_keys)
            .where(
                api_keys.c.caller_id == row["caller_id"],
                sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
            )
            .scalar_subquery()
        )
        values = sa.select(*[sa.literal(row.get(name), type_=api_keys.c[name].type).label(name) for name in _INSERTED_COLUMNS]).where(
            live < cap
        )
        statement = api_keys.insert().from_select(list(_INSERTED_COLUMNS), values)
        async with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": "api_keys:" + row["caller_id"]})
            result = await connection.execute(statement)
        return result.rowcount == 1

    async def list_for(self, caller_id: str) -> list[dict[str, Any]]:
        """The caller's keys, oldest first."""
        statement = sa.select(api_keys).where(api_keys.c.caller_id == caller_id).order_by(api_keys.c.created_at, api_keys.c.id)
        async with self.engine.connect() as connection:
            return [dict(row) for row in (await connection.execute(statement)).mappings()]

    async def get(self, caller_id: str, key_id: str) -> dict[str, Any] | None:
        statement = sa.select(api_keys).where(api_keys.c.id == key_id, api_keys.c.caller_id == caller_id)
        async with self.engine.connect() as connection:
            row = (await connection.execute(statement)).mappings().first()
        return dict(row) if row else None

    async def find_by_hash(self, secret_hash: str) -> dict[str, Any] | None:
        """The key whose secret hashes to ``secret_hash`` (the unique index finds it; no table scan)."""
        async with self.engine.connect() as connection:
            row = (await connection.execute(sa.select(api_keys).where(api_keys.c.secret_hash == secret_hash))).mappings().first()
        return dict(row) if row else None

    async def replace_secret(self, caller_id: str, key_id: str, *, secret_hash: str, prefix: str, now: datetime) -> dict[str, Any] | None:
        """Rotation: the key's new secret replaces the old one in one UPDATE, so the old secret finds nothing from the
        moment it commits (in every process: requests look keys up here). None when the caller has no such key."""
        statement = (
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.caller_id == caller_id)
            .values(secret_hash=secret_hash, prefix=prefix, rotated_at=now, last_used_at=None)
        )
        async with self.engine.begin() as connection:
            if (await connection.execute(statement)).rowcount != 1:
                return None
            row = (await connection.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).mappings().first()
        return dict(row) if row else None

    async def delete(self, caller_id: str, key_id: str) -> bool:
        """Revocation: the key's row is deleted; False when the caller has no such key."""
        async with self.engine.begin() as connection:
            result = await connection.execute(sa.delete(api_keys).where(api_keys.c.id == key_id, api_keys.c.caller_id == caller_id))
        return result.rowcount == 1

    async def touch(self, key_id: str, *, now: datetime, every: timedelta) -> None:
        """Record a use: one UPDATE, skipped by the database when the last recorded use is more recent than ``every``."""
        statement = (
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now - every))
            .values(last_used_at=now)
        )
        async with self.engine.begin() as connection:
            await connection.execute(statement)
