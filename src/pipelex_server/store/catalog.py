"""The methods catalog's rows: methods with their draft, published versions, and the deletion claim.

A draft write with a token is a compare-and-set on ``updated_at`` (the draft's token); a publish is a compare-and-set
on the draft's token and on ``latest_version`` in the same transaction as the version's insert, so two concurrent
publishers write one version. Every read is scoped to the caller.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.common import InvalidCursor, newest_first, utcnow
from pipelex_server.store.tables import method_examples, method_versions, methods, runs


def encode_position(kind: str, *parts: Any) -> str:
    """An opaque cursor: the list it belongs to and the position in it."""
    raw = json.dumps([kind, *parts]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(kind: str, cursor: str, size: int) -> list[Any]:
    """The parts of a cursor ``encode_position(kind, ...)`` made; ``InvalidCursor`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidCursor(cursor) from exc
    if not isinstance(parts, list) or len(parts) != size + 1 or parts[0] != kind:
        raise InvalidCursor(cursor)
    return parts[1:]


def next_token(previous: datetime | None) -> datetime:
    """A draft token strictly after ``previous`` (two writes in one microsecond still get two tokens)."""
    now = utcnow()
    if previous is not None and now <= previous:
        return previous + timedelta(microseconds=1)
    return now


class CatalogRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # ---------------------------------------------------------------- methods

    async def insert_method(self, row: dict[str, Any]) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(methods.insert(), row)

    async def get_method(self, caller_id: str, method_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            result = await connection.execute(sa.select(methods).where(methods.c.id == method_id, methods.c.caller_id == caller_id))
            row = result.mappings().first()
        return dict(row) if row else None

    async def list_methods(
        self, caller_id: str, *, q: str | None, published: bool | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        statement = sa.select(methods).where(methods.c.caller_id == caller_id)
        if q:
            pattern = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            statement = statement.where(
                sa.or_(
                    sa.func.lower(methods.c.name).like(pattern, escape="\\"),
                    sa.func.lower(sa.func.coalesce(methods.c.description, "")).like(pattern, escape="\\"),
                )
            )
        if published is True:
            statement = statement.where(methods.c.latest_version.is_not(None))
        elif published is False:
            statement = statement.where(methods.c.latest_version.is_(None))
        return await newest_first(self.engine, statement, methods, limit, cursor)

    async def rename(self, method_id: str, name: str) -> bool:
        """Rename a live method; moves no token."""
        async with self.engine.begin() as connection:
            result = await connection.execute(
                sa.update(methods).where(methods.c.id == method_id, methods.c.deletion_state.is_(None)).values(name=name)
            )
        return bool(result.rowcount)

    async def write_draft(self, method_id: str, values: dict[str, Any], *, expected: datetime | None) -> dict[str, Any] | None:
        """Replace a live method's draft (``values``) and move its token; with ``expected``, only while the token is
        still that one. Returns the row as written, None when the compare-and-set failed."""
        async with self.engine.begin() as connection:
            current = (await connection.execute(sa.select(methods).where(methods.c.id == method_id))).mappings().first()
            if current is None or current["deletion_state"] is not None:
                return None
            if expected is not None and current["updated_at"] != expected:
                return None
            token = next_token(current["updated_at"])
            result = await connection.execute(
                sa.update(methods)
                .where(methods.c.id == method_id, methods.c.updated_at == current["updated_at"], methods.c.deletion_state.is_(None))
                .values(updated_at=token, **values)
            )
            if not result.rowcount:
                return None
            return {**dict(current), **values, "updated_at": token}

    # ---------------------------------------------------------------- versions

    async def publish(self, method_id: str, version: dict[str, Any], *, token: datetime, previous: int | None) -> bool:
        """Write ``version`` (numbered ``previous + 1``) while the draft's token and the latest version are still the
        ones the publisher saw; False when another write or publish landed first (nothing written)."""
        try:
            async with self.engine.begin() as connection:
                statement = sa.update(methods).where(
                    methods.c.id == method_id, methods.c.updated_at == token, methods.c.deletion_state.is_(None)
                )
                latest = methods.c.latest_version
                statement = statement.where(latest.is_(None) if previous is None else latest == previous)
                result = await connection.execute(statement.values(latest_version=version["version"]))
                if not result.rowcount:
                    return False
                await connection.execute(method_versions.insert(), {"method_id": method_id, **version})
        except IntegrityError:
            return False
        return True

    async def get_version(self, method_id: str, version: int) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(method_versions).where(method_versions.c.method_id == method_id, method_versions.c.version == version)
            )
            row = result.mappings().first()
        return dict(row) if row else None

    async def list_versions(self, method_id: str, *, limit: int, before: int | None) -> tuple[list[dict[str, Any]], int | None]:
        """One page of versions, newest first, and the version number the next page starts below (None at the end)."""
        statement = sa.select(method_versions).where(method_versions.c.method_id == method_id)
        if before is not None:
            statement = statement.where(method_versions.c.version < before)
        statement = statement.order_by(method_versions.c.version.desc()).limit(limit + 1)
        async with self.engine.connect() as connection:
            rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
        if len(rows) > limit:
            rows = rows[:limit]
            return rows, rows[-1]["version"]
        return rows, None

    # ---------------------------------------------------------------- deletion

    async def claim_deletion(self, caller_id: str, method_id: str, job_id: str) -> bool:
        """Mark a method of the caller's as being deleted (a conditional write: one claim wins); a failed erasure may be
        claimed again."""
        claimable = sa.or_(methods.c.deletion_state.is_(None), methods.c.deletion_state == "failed")
        async with self.engine.begin() as connection:
            result = await connection.execute(
                sa.update(methods)
                .where(methods.c.id == method_id, methods.c.caller_id == caller_id, claimable)
                .values(deletion_state="pending", deletion_job_id=job_id)
            )
        return bool(result.rowcount)

    async def set_deletion_state(self, method_id: str, state: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(sa.update(methods).where(methods.c.id == method_id).values(deletion_state=state))

    async def pending_deletions(self) -> list[dict[str, Any]]:
        """Methods whose erasure was claimed and has not ended (a restarted server resumes them)."""
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(methods.c.id, methods.c.caller_id).where(methods.c.deletion_state.in_(("pending", "in_progress")))
            )
            return [dict(row) for row in result.mappings()]

    async def run_ids_of(self, caller_id: str, method_id: str) -> list[tuple[str, str]]:
        """The (public id, state) of every run of the caller's that ran this method."""
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(runs.c.public_id, runs.c.state).where(runs.c.caller_id == caller_id, runs.c.method_id == method_id)
            )
            return [(row.public_id, row.state) for row in result]

    async def erase(self, method_id: str) -> None:
        """Remove the method's examples, versions and row."""
        async with self.engine.begin() as connection:
            await connection.execute(sa.delete(method_examples).where(method_examples.c.method_id == method_id))
            await connection.execute(sa.delete(method_versions).where(method_versions.c.method_id == method_id))
            await connection.execute(sa.delete(methods).where(methods.c.id == method_id))
