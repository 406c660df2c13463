"""Migrations upgrade a store that has runs in it, on SQLite and PostgreSQL, without losing any of it."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from pipelex_server.composition import build_run_service
from pipelex_server.errors import ApiProblem
from pipelex_server.runs.model import Caller, RunRequest
from pipelex_server.settings import Settings
from pipelex_server.store.db import MIGRATIONS_DIR, make_engine, migrate
from pipelex_server.store.runs import RunRepository
from pipelex_server.store.tables import UtcDateTime
from tests.support.bundles import seed_request

OLD_RUNS = 3


@pytest.fixture
async def empty_store_url(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """An empty database (the session's PostgreSQL database is already at the newest revision)."""
    if not database_url.startswith("postgresql"):
        yield database_url
        return
    import asyncpg

    admin_url = request.getfixturevalue("postgres_admin_url")  # the server this test session uses
    name = f"pipelex_server_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _upgrade_to(revision: str):
    def run(connection: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return run


async def _fill_at_0002(engine, caller: str) -> list[str]:
    """Runs as a 0002 server wrote them: id = the caller's run id, with events, deliveries and checkpoints."""
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    stamp = sa.bindparam("now", type_=UtcDateTime)
    ids = [f"legacy-{index}-{uuid.uuid4().hex}" for index in range(OLD_RUNS)]
    async with engine.begin() as connection:
        for run_id in ids:
            await connection.execute(
                sa.text(
                    "INSERT INTO runs (id, caller_id, kind, state, pipe_code, request_hash, request, dry_run, created_at, "
                    "started_at, finished_at, updated_at, main_stuff_name, output, usage, workflow_id, cancel_requested) "
                    "VALUES (:id, :caller, 'start', 'COMPLETED', 'summarize', 'h', :request, false, :now, :now, :now, :now, "
                    "'summary', :output, :usage, :workflow, false)"
                ).bindparams(stamp),
                {
                    "id": run_id,
                    "caller": caller,
                    "now": now,
                    "request": json.dumps(seed_request(callback_urls=["http://127.0.0.1:9/hook"])),
                    "output": json.dumps({"working_memory": {"root": {"summary": {"content": run_id}}, "aliases": {}}}),
                    "usage": json.dumps({"tokens": {"input": 1, "output": 1}, "cost_usd": None, "by_pipe": []}),
                    "workflow": f"pipelex-run-{run_id}",
                },
            )
            for seq, name, state in ((1, "state", "STARTED"), (2, "state", "RUNNING"), (3, "state", "COMPLETED"), (4, "end", "COMPLETED")):
                await connection.execute(
                    sa.text("INSERT INTO run_events (run_id, seq, event, data, at) VALUES (:id, :seq, :event, :data, :now)").bindparams(
                        stamp
                    ),
                    {
                        "id": run_id,
                        "seq": seq,
                        "event": name,
                        "data": json.dumps({"pipeline_run_id": run_id, "pipeline_state": state}),
                        "now": now,
                    },
                )
            await connection.execute(
                sa.text(
                    "INSERT INTO deliveries (run_id, position, url, attempts, max_attempts, last_status) VALUES (:id, 0, 'http://127.0.0.1:9/hook', 2, 8, 503)"
                ),
                {"id": run_id},
            )
            await connection.execute(
                sa.text(
                    "INSERT INTO run_checkpoints (run_id, path, pipe_code, data, created_at) VALUES (:id, 'step', 'summarize', '{}', :now)"
                ).bindparams(stamp),
                {"id": run_id, "now": now},
            )
    return ids


async def test_0003_keeps_existing_runs_events_deliveries_and_checkpoints(empty_store_url, session_app):
    engine = make_engine(empty_store_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to("0002"))
        ids = await _fill_at_0002(engine, "alice")
        await migrate(engine)
        await migrate(engine)  # idempotent

        repository = RunRepository(engine)
        service = build_run_service(Settings(), database=engine, engine=session_app.services.engine, store=session_app.services.store)
        alice, bob = Caller(id="alice"), Caller(id="bob")
        for run_id in ids:
            row = await repository.get_public("alice", run_id)
            assert row is not None and row["id"] == run_id and row["public_id"] == run_id and row["redeliveries"] == 0
            assert await repository.get_public("bob", run_id) is None
            assert [event["seq"] for event in await repository.events_after(run_id, 0)] == [1, 2, 3, 4]
            assert (await service.attempts.checkpoints.of_run(run_id))["step"]["pipe_code"] == "summarize"
            document = await service.get_document(caller=alice, run_id=run_id)
            assert document["pipeline_run_id"] == run_id and document["pipeline_state"] == "COMPLETED"
            assert document["workflow_id"] == f"pipelex-run-{run_id}"
            assert document["pipe_output"]["working_memory"]["root"]["summary"]["content"] == run_id
            assert [(callback["attempts"], callback["last_status"]) for callback in document["callbacks"]] == [(2, 503)]
            stream = await service.follow_events(caller=alice, run_id=run_id, after_seq=0)
            assert [event["event"] for event in [event async for event in stream]] == ["state", "state", "state", "end"]
        listed = await service.list_documents(caller=alice, state=None, pipe_code=None, limit=50, cursor=None)
        assert sorted(run["pipeline_run_id"] for run in listed["runs"]) == sorted(ids)

        # an old run's id stays taken for its caller; another caller may use it for a run of its own
        request = RunRequest.from_json(seed_request(dry_run=True))
        with pytest.raises(ApiProblem) as conflict:
            await service.start(caller=alice, request=request, run_id=ids[0], request_id=None)
        assert conflict.value.code == "request.idempotency_conflict"
        started = await service.start(caller=bob, request=request, run_id=ids[0], request_id=None)
        assert started["pipeline_run_id"] == ids[0]
        bobs = await repository.get_public("bob", ids[0])
        assert bobs is not None and bobs["id"] != ids[0]
        await service.close()
        assert (await repository.get(ids[0]))["caller_id"] == "alice"
    finally:
        await engine.dispose()
