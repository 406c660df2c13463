"""A method's saved examples: named inputs with a revision that rises when they change, and their latest run.

Every conditional write (latest run, the assistant's save) is one compare-and-set on the example's revision, never
retried, so a person's edit is never written over.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.common import utcnow
from pipelex_server.store.tables import method_examples


class ExampleRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, row: dict[str, Any]) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(method_examples.insert(), row)

    async def get(self, method_id: str, example_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(method_examples).where(method_examples.c.id == example_id, method_examples.c.method_id == method_id)
            )
            row = result.mappings().first()
        return dict(row) if row else None

    async def list_oldest_first(
        self, method_id: str, *, limit: int, after: tuple[datetime, str] | None
    ) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
        """One page, oldest first (created_at, then id), and the position the next page starts after (None at the end)."""
        table = method_examples
        statement = sa.select(table).where(table.c.method_id == method_id)
        if after is not None:
            created_at, example_id = after
            statement = statement.where(
                sa.or_(table.c.created_at > created_at, sa.and_(table.c.created_at == created_at, table.c.id > example_id))
            )
        statement = statement.order_by(table.c.created_at, table.c.id).limit(limit + 1)
        async with self.engine.connect() as connection:
            rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
        if len(rows) > limit:
            rows = rows[:limit]
            return rows, (rows[-1]["created_at"], rows[-1]["id"])
        return rows, None

    async def update(self, method_id: str, example_id: str, values: dict[str, Any], *, revision: int | None = None) -> bool:
        """Write ``values`` (and a new ``updated_at``); with ``revision``, only while the example holds it."""
        statement = sa.update(method_examples).where(method_examples.c.id == example_id, method_examples.c.method_id == method_id)
        if revision is not None:
            statement = statement.where(method_examples.c.input_revision == revision)
        async with self.engine.begin() as connection:
            result = await connection.execute(statement.values(updated_at=utcnow(), **values))
        return bool(result.rowcount)

    async def change_inputs(self, method_id: str, example_id: str, *, name: str | None, inputs: Any, revision: int) -> bool:
        """New inputs: the revision rises by one, the latest run is cleared and the assistant no longer keeps it; only
        while the example still holds ``revision`` (an edit racing another)."""
        values: dict[str, Any] = {"inputs": inputs, "input_revision": revision + 1, "latest_run_id": None, "kept_by_assistant": False}
        if name is not None:
            values["name"] = name
        return await self.update(method_id, example_id, values, revision=revision)

    async def keep_for_assistant(self, method_id: str, example_id: str, *, inputs: Any, revision: int) -> bool:
        """The assistant's save into its example: only while it exists, is still the assistant's and holds ``revision``."""
        statement = sa.update(method_examples).where(
            method_examples.c.id == example_id,
            method_examples.c.method_id == method_id,
            method_examples.c.input_revision == revision,
            method_examples.c.kept_by_assistant.is_(True),
        )
        async with self.engine.begin() as connection:
            result = await connection.execute(
                statement.values(inputs=inputs, input_revision=revision + 1, latest_run_id=None, updated_at=utcnow())
            )
        return bool(result.rowcount)

    async def delete(self, method_id: str, example_id: str) -> bool:
        async with self.engine.begin() as connection:
            result = await connection.execute(
                sa.delete(method_examples).where(method_examples.c.id == example_id, method_examples.c.method_id == method_id)
            )
        return bool(result.rowcount)
