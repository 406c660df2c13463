"""The store's async engine comes without SQLAlchemy's ORM, and the rest of ``sqlalchemy.ext.asyncio`` is still there
for whoever asks for it (in a fresh interpreter: this test process has long imported the whole package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import asyncio, sys
import sqlalchemy as sa
from pipelex_server.store.db import make_engine, migrate
from pipelex_server.store.runs import RunRepository  # a module of the store, imported as the server does

async def main():
    engine = make_engine(sys.argv[1])
    try:
        await migrate(engine)
        async with engine.connect() as connection:
            print("runs", (await connection.execute(sa.text("SELECT count(*) FROM runs"))).scalar_one())
    finally:
        await engine.dispose()

asyncio.run(main())
print("orm", "sqlalchemy.orm" in sys.modules)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
print("orm", "sqlalchemy.orm" in sys.modules, AsyncSession.__module__, async_sessionmaker.__name__)
"""


def test_the_store_runs_without_the_orm_and_the_session_classes_load_when_asked(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    done = subprocess.run([sys.executable, "-c", SCRIPT, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:3] == [
        "runs 0",
        "orm False",
        "orm True sqlalchemy.ext.asyncio.session async_sessionmaker",
    ]
