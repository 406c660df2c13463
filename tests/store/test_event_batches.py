"""The event flusher writes every run's buffered progress in one transaction; the cancellation poll reads in one."""

from pipelex_server.runs.events import RunEvents
from tests.store.test_run_store import open_store, run_row


async def test_the_flusher_writes_the_progress_of_every_free_run_at_once_and_leaves_a_held_one_to_its_holder(database_url):
    repository = await open_store(database_url)
    events = RunEvents(repository)
    try:
        rows = [run_row(state="RUNNING", owner="me", lease_in=60) for _ in range(3)]
        for row in rows:
            assert await repository.insert_run(row)
            events.open(row["id"], next_seq=1, public_id=row["public_id"])
            for step in range(3):
                events.buffer(row["id"], "pipe_started", {"pipe_code": f"step_{step}"})
        held = rows[2]["id"]
        async with events.lock_for(held):  # a state change of that run is being written
            busy = await events._flush_free([row["id"] for row in rows])
            assert busy == [held]
            assert await repository.events_after(held, 0) == []
        for row in rows[:2]:
            written = await repository.events_after(row["id"], 0)
            assert [(event["seq"], event["event"], event["data"]["pipe_code"]) for event in written] == [
                (1, "pipe_started", "step_0"),
                (2, "pipe_started", "step_1"),
                (3, "pipe_started", "step_2"),
            ]
            assert {event["data"]["pipeline_run_id"] for event in written} == {row["public_id"]}
            assert events.take_pending(row["id"]) == []
        await events.flush(held)
        assert [event["seq"] for event in await repository.events_after(held, 0)] == [1, 2, 3]
        assert await events._flush_free([row["id"] for row in rows]) == []  # nothing left to write
    finally:
        await repository.engine.dispose()


async def test_a_batch_the_store_refuses_is_written_run_by_run(database_url):
    repository = await open_store(database_url)
    events = RunEvents(repository)
    try:
        row = run_row(state="RUNNING", owner="me", lease_in=60)
        assert await repository.insert_run(row)
        events.open(row["id"], next_seq=1, public_id=row["public_id"])
        events.buffer(row["id"], "pipe_started", {"pipe_code": "a"})

        async def refuse(_batch: object) -> None:
            raise RuntimeError("the store refused the batch")

        repository.append_events_of = refuse  # type: ignore[method-assign]
        assert await events._flush_free([row["id"]]) == []
        assert [event["seq"] for event in await repository.events_after(row["id"], 0)] == [1]
    finally:
        await repository.engine.dispose()


async def test_cancel_requested_among_names_only_the_runs_asked_to_stop(database_url):
    repository = await open_store(database_url)
    try:
        rows = [run_row(state="RUNNING", owner="me", lease_in=60) for _ in range(3)]
        for row in rows:
            assert await repository.insert_run(row)
        assert await repository.cancel_requested_among([row["id"] for row in rows]) == []
        assert await repository.request_cancel(rows[1]["id"])
        assert await repository.cancel_requested_among([row["id"] for row in rows]) == [rows[1]["id"]]
        assert await repository.cancel_requested_among([rows[0]["id"]]) == []
        assert await repository.cancel_requested_among([]) == []
    finally:
        await repository.engine.dispose()
