"""File records (the platform's ``/v1/files``), the runs whose files are recorded, and the addresses runs took."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.common import TERMINAL_STATES
from pipelex_server.store.tables import file_runs, file_uses, files, runs


@dataclass
class FileFilters:
    """What a file list is narrowed to (each member None/empty when not asked)."""

    run_id: str | None = None
    method_id: str | None = None
    kind: str | None = None
    media_types: Sequence[str] = ()
    media_type_prefixes: Sequence[str] = ()  # a format key names a family (image/…) as well as exact types
    created_from: datetime | None = None
    created_to: datetime | None = None
    q: str | None = None
    exclude_roles: Sequence[str] = field(default_factory=lambda: ("intermediate",))


class FileRepository:
    """The only SQL of the file records."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, row: dict[str, Any]) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(files.insert(), row)

    async def get(self, file_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(sa.select(files).where(files.c.id == file_id))).mappings().first()
        return dict(row) if row else None

    async def by_key(self, caller_id: str, key: str) -> list[dict[str, Any]]:
        """The caller's records of one object, oldest first."""
        statement = sa.select(files).where(files.c.caller_id == caller_id, files.c.key == key).order_by(files.c.created_at, files.c.id)
        async with self.engine.connect() as connection:
            return [dict(row) for row in (await connection.execute(statement)).mappings()]

    async def rename(self, file_id: str, caller_id: str, name: str) -> dict[str, Any] | None:
        async with self.engine.begin() as connection:
            result = await connection.execute(
                sa.update(files).where(files.c.id == file_id, files.c.caller_id == caller_id).values(name=name)
            )
            if not result.rowcount:
                return None
            row = (await connection.execute(sa.select(files).where(files.c.id == file_id))).mappings().first()
        return dict(row) if row else None

    async def delete_for_upload(self, upload_id: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(sa.delete(files).where(files.c.upload_id == upload_id))

    async def page(
        self, caller_id: str, filters: FileFilters, *, limit: int, after: tuple[datetime, str] | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of the caller's records, newest first, after ``after`` (created_at, id); and whether more follow."""
        run_alive = sa.exists(sa.select(runs.c.id).where(runs.c.caller_id == files.c.caller_id, runs.c.public_id == files.c.run_id))
        # a record of a run deleted since is not listed, even before forget_deleted_runs removes it
        statement = sa.select(files).where(files.c.caller_id == caller_id, sa.or_(files.c.run_id.is_(None), run_alive))
        if filters.run_id is not None:
            statement = statement.where(files.c.run_id == filters.run_id)
        if filters.method_id is not None:
            statement = statement.where(files.c.method_id == filters.method_id)
        if filters.kind is not None:
            statement = statement.where(files.c.kind == filters.kind)
        if filters.exclude_roles:
            statement = statement.where(sa.or_(files.c.role.is_(None), files.c.role.not_in(list(filters.exclude_roles))))
        if filters.media_types or filters.media_type_prefixes:
            statement = statement.where(
                sa.or_(
                    files.c.media_type.in_(list(filters.media_types)),
                    *(files.c.media_type.startswith(prefix, autoescape=True) for prefix in filters.media_type_prefixes),
                )
            )
        if filters.created_from is not None:
            statement = statement.where(files.c.created_at >= filters.created_from)
        if filters.created_to is not None:
            statement = statement.where(files.c.created_at <= filters.created_to)
        if filters.q:
            pattern = "%" + filters.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            statement = statement.where(
                sa.or_(
                    sa.func.lower(files.c.name).like(pattern, escape="\\"), sa.func.lower(files.c.original_name).like(pattern, escape="\\")
                )
            )
        if after is not None:
            created_at, row_id = after
            statement = statement.where(
                sa.or_(files.c.created_at < created_at, sa.and_(files.c.created_at == created_at, files.c.id < row_id))
            )
        statement = statement.order_by(files.c.created_at.desc(), files.c.id.desc()).limit(limit + 1)
        async with self.engine.connect() as connection:
            rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
        return rows[:limit], len(rows) > limit

    async def run_records(self, caller_id: str, run_id: str, *, limit: int, after_key: str | None) -> tuple[list[dict[str, Any]], bool]:
        """A run's own records (inline inputs, outputs, intermediates), by address."""
        statement = sa.select(files).where(files.c.caller_id == caller_id, files.c.run_id == run_id)
        if after_key is not None:
            statement = statement.where(files.c.key > after_key)
        statement = statement.order_by(files.c.key).limit(limit + 1)
        async with self.engine.connect() as connection:
            rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
        return rows[:limit], len(rows) > limit

    # ---------------------------------------------------------------- runs' files

    async def unrecorded_runs(self, caller_id: str, since: datetime, limit: int) -> list[dict[str, Any]]:
        """The caller's runs ended since ``since`` whose files are not recorded yet (oldest first)."""
        recorded = sa.select(file_runs.c.run_key).where(file_runs.c.run_key == runs.c.id)
        statement = (
            sa.select(runs)
            .where(runs.c.caller_id == caller_id, runs.c.state.in_(TERMINAL_STATES), runs.c.updated_at >= since, ~sa.exists(recorded))
            .order_by(runs.c.created_at)
            .limit(limit)
        )
        async with self.engine.connect() as connection:
            return [dict(row) for row in (await connection.execute(statement)).mappings()]

    async def is_recorded(self, run_key: str) -> bool:
        async with self.engine.connect() as connection:
            found = (await connection.execute(sa.select(file_runs.c.run_key).where(file_runs.c.run_key == run_key))).first()
        return found is not None

    async def record_run(self, marker: dict[str, Any], records: Sequence[dict[str, Any]], uses: Sequence[dict[str, Any]]) -> bool:
        """Record a run's files and uses once (False when another request recorded them first)."""
        try:
            async with self.engine.begin() as connection:
                await connection.execute(file_runs.insert(), marker)
                if records:
                    await connection.execute(files.insert(), list(records))
                if uses:
                    await connection.execute(file_uses.insert(), list(uses))
        except IntegrityError:
            return False
        return True

    async def forget_deleted_runs(self, caller_id: str | None = None, limit: int = 200) -> int:
        """Remove the records and uses of recorded runs that no longer exist (deleted, or purged by retention)."""
        gone = sa.select(file_runs).where(~sa.exists(sa.select(runs.c.id).where(runs.c.id == file_runs.c.run_key)))
        if caller_id is not None:
            gone = gone.where(file_runs.c.caller_id == caller_id)
        async with self.engine.begin() as connection:
            markers = [dict(row) for row in (await connection.execute(gone.limit(limit))).mappings()]
            for marker in markers:
                caller, run_id = marker["caller_id"], marker["run_id"]
                await connection.execute(sa.delete(files).where(files.c.caller_id == caller, files.c.run_id == run_id))
                await connection.execute(
                    sa.delete(file_uses).where(
                        file_uses.c.caller_id == caller, file_uses.c.holder_type == "run", file_uses.c.holder_id == run_id
                    )
                )
                await connection.execute(sa.delete(file_runs).where(file_runs.c.run_key == marker["run_key"]))
        return len(markers)

    # ---------------------------------------------------------------- uses

    async def uses(self, caller_id: str, key: str, *, limit: int, after_id: int | None) -> tuple[list[dict[str, Any]], bool]:
        statement = sa.select(file_uses).where(file_uses.c.caller_id == caller_id, file_uses.c.key == key)
        if after_id is not None:
            statement = statement.where(file_uses.c.id > after_id)
        statement = statement.order_by(file_uses.c.id).limit(limit + 1)
        async with self.engine.connect() as connection:
            rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
        return rows[:limit], len(rows) > limit

    async def method_ids(self, caller_id: str, key: str) -> list[str]:
        """The methods whose runs took or made the object."""
        made = sa.select(files.c.method_id).where(files.c.caller_id == caller_id, files.c.key == key, files.c.method_id.is_not(None))
        took = sa.select(file_uses.c.method_id).where(
            file_uses.c.caller_id == caller_id, file_uses.c.key == key, file_uses.c.method_id.is_not(None)
        )
        async with self.engine.connect() as connection:
            found = {row[0] for row in await connection.execute(sa.union(made, took))}
        return sorted(found)
