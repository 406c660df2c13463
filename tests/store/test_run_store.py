"""The run store on SQLite and PostgreSQL: migrations, leases, settlement of runs left by a dead process."""

import asyncio
import uuid
from datetime import timedelta

import sqlalchemy as sa

from pipelex_server.composition import build_run_service
from pipelex_server.runs.model import Caller, RunRequest
from pipelex_server.settings import Settings
from pipelex_server.store.common import utcnow
from pipelex_server.store.db import make_engine, migrate
from pipelex_server.store.runs import RunRepository
from pipelex_server.store.tables import runs
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT

EXECUTE = "/api/v1/pipeline/execute"


def run_row(*, state: str, owner: str | None, lease_in: float | None, request: RunRequest | None = None) -> dict:
    now = utcnow()
    request = request or RunRequest(
        pipe_code=None,
        mthds_contents=[SEED_BUNDLE],
        inputs={"text": SEED_TEXT},
        output_name=None,
        output_multiplicity=None,
        dynamic_output_concept_ref=None,
        dry_run=True,
        callback_urls=[],
    )
    run_id = f"r-{uuid.uuid4().hex}"
    return {
        "id": run_id,
        "public_id": run_id,
        "caller_id": "shared",
        "kind": "execute",
        "state": state,
        "pipe_code": None,
        "request_hash": request.fingerprint(),
        "request": request.to_json(),
        "dry_run": True,
        "created_at": now,
        "updated_at": now,
        "started_at": now if state == "RUNNING" else None,
        "callbacks": [],
        "lease_owner": owner,
        "lease_expires_at": now + timedelta(seconds=lease_in) if lease_in is not None else None,
    }


async def open_store(url: str) -> RunRepository:
    engine = make_engine(url)
    await migrate(engine)
    await migrate(engine)  # idempotent
    return RunRepository(engine)


async def test_migrations_create_the_tables(database_url):
    repository = await open_store(database_url)
    try:
        async with repository.engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        assert {"runs", "run_events", "alembic_version"} <= set(tables)
    finally:
        await repository.engine.dispose()


async def test_expired_leases_are_settled_and_live_ones_untouched(database_url, session_app):
    repository = await open_store(database_url)
    service = build_run_service(
        Settings(lease_seconds=30), database=repository.engine, engine=session_app.services.engine, store=session_app.services.store
    )
    try:
        dead_running = run_row(state="RUNNING", owner="dead-process", lease_in=-5)
        live_running = run_row(state="RUNNING", owner="live-process", lease_in=60)
        dead_started = run_row(state="STARTED", owner="dead-process", lease_in=-5)
        for row in (dead_running, live_running, dead_started):
            assert await repository.insert_run(row)

        settled = await service.executor.leases.settle_expired()
        assert set(settled) == {dead_running["id"], dead_started["id"]}
        # taken at once: the re-queued run executes meanwhile, and its task leaves ``running`` when it ends
        task = service.executor.running.get(dead_started["id"])

        lost = await repository.get(dead_running["id"])
        assert lost["state"] == "ERROR"
        assert lost["error"]["code"] == "run.lost"
        assert lost["finished_at"] is not None

        untouched = await repository.get(live_running["id"])
        assert untouched["state"] == "RUNNING" and untouched["lease_owner"] == "live-process"

        # the never-started run was re-queued on this process and runs to its end
        assert task is not None
        finished = await task
        assert finished["state"] == "COMPLETED"
        assert finished["output"]["working_memory"]["root"]
    finally:
        await service.close()
        await repository.engine.dispose()


async def test_two_processes_settle_a_run_once(database_url, session_app):
    repository = await open_store(database_url)
    engine = session_app.services.engine
    first = build_run_service(Settings(), database=repository.engine, engine=engine, store=session_app.services.store)
    second = build_run_service(Settings(), database=repository.engine, engine=engine, store=session_app.services.store)
    try:
        rows = [run_row(state="RUNNING", owner="dead", lease_in=-1) for _ in range(10)]
        for row in rows:
            await repository.insert_run(row)
        settled_a, settled_b = await asyncio.gather(first.executor.leases.settle_expired(), second.executor.leases.settle_expired())
        assert sorted(settled_a + settled_b) == sorted(row["id"] for row in rows)
        assert not set(settled_a) & set(settled_b)
    finally:
        await repository.engine.dispose()


async def test_a_renewed_lease_is_not_settled(database_url, session_app):
    repository = await open_store(database_url)
    service = build_run_service(
        Settings(), database=repository.engine, engine=session_app.services.engine, store=session_app.services.store
    )
    try:
        row = run_row(state="RUNNING", owner=service.lifecycle.instance_id, lease_in=-1)
        await repository.insert_run(row)
        renewed = await repository.renew_leases(service.lifecycle.instance_id, [row["id"]], utcnow() + timedelta(seconds=30))
        assert renewed == 1
        assert await service.executor.leases.settle_expired() == []
        assert (await repository.get(row["id"]))["state"] == "RUNNING"
    finally:
        await repository.engine.dispose()


async def test_execute_records_runs_in_the_configured_store(database_url, make_app):
    app = await make_app(database_url=database_url)
    response = await app.client.post(EXECUTE, json={"mthds_contents": [SEED_BUNDLE], "inputs": {"text": "hi"}, "dry_run": True})
    assert response.status_code == 200, response.text
    repository = app.services.runs.repository
    run_id = response.json()["pipeline_run_id"]
    async with repository.engine.connect() as connection:
        count = (await connection.execute(sa.select(sa.func.count()).select_from(runs).where(runs.c.public_id == run_id))).scalar_one()
    assert count == 1
    row = await repository.get_public("shared", run_id)
    assert row["state"] == "COMPLETED" and row["caller_id"] == Caller(id="shared").id
    assert row["created_at"].tzinfo is not None


async def test_concurrent_migrations_of_one_sqlite_file_both_succeed(tmp_path):
    """Several processes (workers) booting on a fresh SQLite file migrate it at the same moment."""
    import subprocess
    import sys

    url = f"sqlite+aiosqlite:///{tmp_path / 'race.sqlite3'}"
    code = (
        "import asyncio, sys\n"
        "from pipelex_server.store.db import make_engine, migrate\n"
        "async def main():\n"
        "    engine = make_engine(sys.argv[1])\n"
        "    await migrate(engine)\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE) for _ in range(4)]
    results = [(process.wait(timeout=60), process.stderr.read().decode()) for process in processes]
    assert all(code == 0 for code, _ in results), results
