"""The run store's hot-path transactions (store/transactions.py): on a SQLite file they run whole in a thread of the
store's own, elsewhere in the async connection; either way with the outcomes the store promises."""

import asyncio
import threading
import uuid

import pytest

from pipelex_server.store.common import utcnow
from pipelex_server.store.db import make_engine, migrate
from pipelex_server.store.runs import ActiveRunLimit, RunRepository
from pipelex_server.store.tables import runs
from pipelex_server.store.transactions import transact
from tests.store.test_run_store import run_row


def event(seq: int) -> dict:
    return {"seq": seq, "event": "state", "data": {"pipeline_state": "STARTED"}, "at": utcnow()}


def store_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("sqlite-store")}


async def test_the_active_limit_is_exact_under_concurrent_insertions_from_two_engines(database_url):
    """Two engines on one database (two processes, as far as the database knows), each inserting concurrently."""
    first = make_engine(database_url)
    second = make_engine(database_url)
    await migrate(first)
    repositories = [RunRepository(first), RunRepository(second)]
    caller = f"caller-{uuid.uuid4().hex}"

    async def insert(index: int) -> bool:
        row = {**run_row(state="STARTED", owner=None, lease_in=None), "caller_id": caller}
        try:
            return await repositories[index % 2].insert_run(row, events=[event(1)], max_active=5)
        except ActiveRunLimit:
            return False

    try:
        inserted = await asyncio.gather(*(insert(index) for index in range(24)))
        assert inserted.count(True) == 5
        assert await repositories[0].count_active(caller) == 5
    finally:
        await first.dispose()
        await second.dispose()


async def test_a_duplicate_run_is_refused_and_writes_nothing(database_url):
    engine = make_engine(database_url)
    await migrate(engine)
    repository = RunRepository(engine)
    row = run_row(state="RUNNING", owner="me", lease_in=30)
    try:
        assert await repository.insert_run(row, events=[event(1)])
        assert not await repository.insert_run({**row, "public_id": "another"}, events=[event(1), event(2)])
        assert await repository.max_seq(row["id"]) == 1
        assert await repository.get_public(row["caller_id"], "another") is None
        # a compare-and-set from a state the run is not in changes nothing, and writes none of its events
        assert not await repository.transition(row["id"], from_states=("STARTED",), values={"state": "CANCELLED"}, events=[event(2)])
        assert await repository.transition(row["id"], from_states=("RUNNING",), values={"state": "COMPLETED"}, events=[event(2)])
        assert (await repository.get(row["id"]))["state"] == "COMPLETED"
        assert await repository.max_seq(row["id"]) == 2
    finally:
        await engine.dispose()


async def test_a_caller_cancelled_before_the_commit_leaves_nothing_written(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}")
    await migrate(engine)
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()
    proceed = threading.Event()
    row = run_row(state="STARTED", owner=None, lease_in=None)

    def body(connection) -> None:
        connection.execute(runs.insert(), row)
        loop.call_soon_threadsafe(entered.set)
        proceed.wait(timeout=60)

    try:
        task = asyncio.create_task(transact(engine, body))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        proceed.set()
        await transact(engine, lambda _connection: None)  # the thread runs one body at a time: the abandoned one is over
        assert await RunRepository(engine).get(row["id"]) is None
    finally:
        proceed.set()
        await engine.dispose()


async def test_disposing_the_engine_stops_its_thread_and_a_later_transaction_starts_it_again(tmp_path):
    before = store_threads()
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}")
    await migrate(engine)
    repository = RunRepository(engine)
    try:
        assert await repository.insert_run(run_row(state="STARTED", owner=None, lease_in=None))
        assert store_threads() - before
        await engine.dispose()
        assert not store_threads() - before
        assert await repository.insert_run(run_row(state="STARTED", owner=None, lease_in=None))
    finally:
        await engine.dispose()
    assert not store_threads() - before


async def test_an_in_memory_database_is_written_through_its_own_connection():
    """A second connection would not see an in-memory database: its transactions stay on the async engine."""
    engine = make_engine("sqlite+aiosqlite:///:memory:")
    await migrate(engine)
    repository = RunRepository(engine)
    row = run_row(state="STARTED", owner=None, lease_in=None)
    try:
        assert await repository.insert_run(row, events=[event(1)], max_active=1)
        with pytest.raises(ActiveRunLimit):
            await repository.insert_run(
                {**run_row(state="STARTED", owner=None, lease_in=None), "caller_id": row["caller_id"]}, max_active=1
            )
        assert await repository.transition(row["id"], from_states=("STARTED",), values={"state": "RUNNING"}, events=[event(2)])
        assert (await repository.get(row["id"]))["state"] == "RUNNING"
        assert await repository.max_seq(row["id"]) == 2
    finally:
        await engine.dispose()
