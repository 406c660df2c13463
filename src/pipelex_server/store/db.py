"""The database engine (SQLite by default, PostgreSQL for several hosts) and the migrations applied at boot."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pipelex_server.store.fresh_schema import create_fresh_sqlite
from pipelex_server.store.transactions import attach_sqlite_thread, is_file_database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str, *, connect_args: dict[str, Any] | None = None) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        sqlite_args = {"timeout": 30, **(connect_args or {})}
        engine = create_async_engine(url, connect_args=sqlite_args)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if is_file_database(parsed):
            attach_sqlite_thread(engine, sqlite_args, _sqlite_pragmas)  # the hot paths' transactions in one hop each
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args or {})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@functools.cache
def head_revision() -> str | None:
    """The newest migration's revision, read from the scripts' ``revision`` / ``down_revision`` lines (no Alembic
    import); None unless exactly one revision is nobody's parent."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = script.read_text(encoding="utf-8")
        found = re.search(r'^revision = "([^"]+)"$', source, re.MULTILINE)
        if found is None:
            return None
        revisions.add(found.group(1))
        parents.update(re.findall(r'^down_revision = "([^"]+)"$', source, re.MULTILINE))
    heads = revisions - parents
    return next(iter(heads)) if len(heads) == 1 else None


def _at_head(connection: Connection) -> bool:
    """The database is already at the newest revision (a restart): Alembic, its import (~11 MiB) and its script scan
    are skipped."""
    head = head_revision()
    if head is None or not inspect(connection).has_table("alembic_version"):
        return False
    return [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))] == [head]


def _upgrade(connection: Connection) -> None:
    if _at_head(connection) or create_fresh_sqlite(connection, head_revision()):
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Apply every pending migration. Idempotent, and safe when several processes boot at once: PostgreSQL
    serializes them on an advisory lock, SQLite on an exclusive lock file beside the database."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with _sqlite_migration_lock(engine):
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
            await connection.run_sync(_upgrade)


@contextlib.contextmanager
def _sqlite_migration_lock(engine: AsyncEngine) -> Iterator[None]:
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks the few ms another process needs to finish
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
