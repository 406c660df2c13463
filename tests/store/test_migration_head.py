"""A store already at the newest revision boots without Alembic: the head read from the scripts is Alembic's own."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from pipelex_server.store.db import MIGRATIONS_DIR, _at_head, head_revision, make_engine, migrate


def test_the_head_read_from_the_scripts_is_alembics_head():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


async def test_a_store_is_at_head_only_once_migrated_to_it(tmp_path: Path):
    def upgrade_to_0003(sync: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = sync
        command.upgrade(config, "0003")

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'runs.sqlite3'}")
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_at_head) is False  # empty: no alembic_version table
        async with engine.begin() as connection:
            await connection.run_sync(upgrade_to_0003)
            assert await connection.run_sync(_at_head) is False  # an older revision: the upgrade must run
        await migrate(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_at_head) is True
            columns = {column["name"] for column in await connection.run_sync(lambda sync: sa.inspect(sync).get_columns("runs"))}
        assert "crate_fingerprint" in columns  # 0004 was applied
        await migrate(engine)  # at head: nothing to do
    finally:
        await engine.dispose()
