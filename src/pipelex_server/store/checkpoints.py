"""Run checkpoints: the finished steps of a run's top-level pipeline, so a retried attempt skips them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.common import utcnow
from pipelex_server.store.tables import run_checkpoints


class CheckpointRepository:
    """Finished steps of a run's top-level pipeline, keyed by (run, invocation path)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def put(self, run_id: str, path: str, pipe_code: str, data: dict[str, Any]) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(sa.delete(run_checkpoints).where(run_checkpoints.c.run_id == run_id, run_checkpoints.c.path == path))
            await connection.execute(
                run_checkpoints.insert(), {"run_id": run_id, "path": path, "pipe_code": pipe_code, "data": data, "created_at": utcnow()}
            )

    async def of_run(self, run_id: str) -> dict[str, dict[str, Any]]:
        async with self.engine.connect() as connection:
            rows = (await connection.execute(sa.select(run_checkpoints).where(run_checkpoints.c.run_id == run_id))).mappings()
            return {row["path"]: dict(row) for row in rows}
