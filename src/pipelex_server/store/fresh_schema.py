"""An empty SQLite store gets the newest schema from a snapshot of what the migrations build, not from Alembic.

Alembic's import and the run of every migration cost a fresh server ~13 MiB of memory it keeps for life (Alembic,
Mako and the Pygments lexers Mako loads for its error pages: Python does not give a module's memory back) and ~0.2 s.
The snapshot (``schema_sqlite.sql``) is the SQL SQLite itself kept (``sqlite_master``) after ``alembic upgrade head``
on an empty file, plus the version stamp: the schema is the migrated one to the byte, so later migrations apply to it
as to any other store. tests/store/test_fresh_schema.py checks it against the migrations and regenerates it
(``python -m tests.store.test_fresh_schema``); a snapshot of an older revision than the scripts' head is not used.
PostgreSQL and non-empty databases always go through Alembic.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

SNAPSHOT = Path(__file__).parent / "schema_sqlite.sql"
_REVISION = re.compile(r"^-- revision: (\S+)$", re.MULTILINE)


def snapshot_revision(source: str) -> str | None:
    found = _REVISION.search(source)
    return found.group(1) if found else None


def snapshot_statements(source: str) -> list[str]:
    body = "\n".join(line for line in source.splitlines() if not line.startswith("--"))
    return [statement.strip() for statement in body.split(";\n") if statement.strip()]


def create_fresh_sqlite(connection: Connection, head: str | None) -> bool:
    """Build the newest schema on an empty SQLite database in the caller's transaction; False (nothing done) when the
    database is not SQLite, not empty, or the snapshot is not of ``head``."""
    if connection.dialect.name != "sqlite" or head is None or inspect(connection).get_table_names():
        return False
    source = SNAPSHOT.read_text(encoding="utf-8")
    if snapshot_revision(source) != head:
        return False
    for statement in snapshot_statements(source):
        connection.exec_driver_sql(statement)
    return True
