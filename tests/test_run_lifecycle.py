"""The run lifecycle's transition table, and the lifecycle refusing, on a real store, every write the table forbids."""

import pytest

from pipelex_server.runs.events import RunEvents
from pipelex_server.runs.lifecycle import CREATED_STATES, TRANSITIONS, IllegalTransition, RunLifecycle, check_transition
from pipelex_server.store.common import ACTIVE_STATES, TERMINAL_STATES, utcnow
from tests.store.test_run_store import open_store, run_row


def test_every_state_the_store_knows_has_a_row():
    assert set(TRANSITIONS) == set(ACTIVE_STATES) | set(TERMINAL_STATES)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_an_ended_run_never_changes_again(state):
    for target in TRANSITIONS:
        with pytest.raises(IllegalTransition):
            check_transition([state], {"state": target})
    with pytest.raises(IllegalTransition):  # not even a write that sets no state
        check_transition([state], {"error": None})


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES))
def test_an_active_run_may_end_in_any_terminal_state_or_stay_active(state):
    for target in [*TERMINAL_STATES, *ACTIVE_STATES]:
        check_transition([state], {"state": target})
    check_transition([state], {"lease_owner": "x"})  # a self-transition


def test_a_write_is_checked_against_every_state_it_may_start_from():
    check_transition(list(ACTIVE_STATES), {"state": "COMPLETED"})
    with pytest.raises(IllegalTransition, match="COMPLETED to RUNNING"):
        check_transition(["STARTED", "COMPLETED"], {"state": "RUNNING"})


def test_runs_are_created_queued_or_running_only():
    assert CREATED_STATES == {"STARTED", "RUNNING"}


async def test_the_lifecycle_writes_allowed_changes_and_refuses_the_rest_on_a_real_store(database_url):
    repository = await open_store(database_url)
    ended: list[str] = []

    async def on_end(run_id: str) -> None:
        ended.append(run_id)

    events = RunEvents(repository)
    lifecycle = RunLifecycle(repository=repository, events=events, instance_id="me", lease_seconds=30, on_end=on_end)
    try:
        # a run cannot be born ended
        born_ended = run_row(state="COMPLETED", owner=None, lease_in=None)
        with pytest.raises(IllegalTransition):
            await lifecycle.create(born_ended, events=[], callback_urls=[], max_attempts=1, max_active=10)
        assert await repository.get(born_ended["id"]) is None

        row = run_row(state="STARTED", owner="me", lease_in=30)  # queued here, under this process's lease
        assert await lifecycle.create(row, events=[], callback_urls=[], max_attempts=1, max_active=10)
        await lifecycle.open_events(row)
        running = await lifecycle.start(row)
        assert running is not None and running["state"] == "RUNNING"
        assert (await repository.get(row["id"]))["state"] == "RUNNING"

        done = await lifecycle.finish(running, {"state": "COMPLETED"})
        assert done["state"] == "COMPLETED"
        stored = await repository.get(row["id"])
        assert stored["state"] == "COMPLETED" and stored["finished_at"] is not None

        # the table refuses what would revive it, and nothing is written
        with pytest.raises(IllegalTransition, match="COMPLETED to RUNNING"):
            await lifecycle._write(row["id"], from_states=("COMPLETED",), values={"state": "RUNNING", "started_at": utcnow()})
        assert (await repository.get(row["id"]))["state"] == "COMPLETED"
        # a queued-run cancel on an ended run is a no-op, not a second end
        assert not await lifecycle.cancel_queued(stored)
        assert (await repository.get(row["id"]))["state"] == "COMPLETED"
        assert ended == []  # no callbacks were asked for, so no end hook ran
    finally:
        await events.close()
        await repository.engine.dispose()
