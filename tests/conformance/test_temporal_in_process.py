"""Temporal mode with the API and a worker in the test's own process (a real Temporal dev server), so the test can
look inside both: the API keeps no per-run memory for runs the workers execute, and RUN_TIMEOUT_SECONDS holds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest

from tests.support.bundles import seed_request
from tests.support.runs import parse_sse, wait_for_end
from tests.support.temporal import in_process_worker

pytestmark = [pytest.mark.slow, pytest.mark.temporal]

START = "/api/v1/pipeline/start"
EXECUTE = "/api/v1/pipeline/execute"


@pytest.fixture
async def temporal_app(make_app, temporal_server, tmp_path):
    async def build(**overrides):
        settings = {
            "execution_mode": "temporal",
            "temporal_address": temporal_server.address,
            "temporal_task_queue": f"in-process-{uuid.uuid4().hex[:8]}",
            "single_host": True,
            "database_url": f"sqlite+aiosqlite:///{tmp_path / f'temporal-{uuid.uuid4().hex[:6]}.sqlite3'}",
            **overrides,
        }
        return await make_app(**settings)

    return build


async def until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Wait for a condition nothing signals (the app's internal counters)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def per_run_memory(service) -> dict[str, int]:
    logs, waiters = service.events.tracked
    return {"event_logs": logs, "waiters": waiters, "tasks": len(service.executor.running), "stream_callers": service.streams.callers}


EMPTY = {"event_logs": 0, "waiters": 0, "tasks": 0, "stream_callers": 0}


@pytest.mark.timeout(400)
async def test_the_api_keeps_nothing_per_run_for_five_hundred_runs_workers_execute(temporal_app):
    """300 /start and 200 /execute dry runs, submitted while no worker runs; 100 SSE followers, half of which
    disconnect before the runs start; then a worker executes all 500. Afterwards the API process holds no event log,
    no waiter, no task and no stream slot (and neither does the worker's run service)."""
    app = await temporal_app(max_active_runs_per_caller=1000, sse_max_streams_per_caller=200)
    api = app.services.runs
    started = []
    for index in range(300):
        response = await app.client.post(START, json=seed_request(dry_run=True, inputs={"text": f"start {index}"}))
        assert response.status_code == 202, response.text
        started.append(response.json()["pipeline_run_id"])
    executes = [
        asyncio.create_task(app.client.post(EXECUTE, json=seed_request(dry_run=True, inputs={"text": f"execute {index}"})))
        for index in range(200)
    ]
    followers = [asyncio.create_task(app.client.get(f"/api/v1/runs/{run_id}/events")) for run_id in started[:100]]
    await until(lambda: api.streams.open_for("shared") == 100)  # every follower is in its stream
    for follower in followers[:50]:  # their clients go away (ASGI: the request is cancelled)
        follower.cancel()
    await asyncio.wait_for(api.streams.wait_open_at_most("shared", 50), 30)
    waiting = per_run_memory(api)
    assert waiting["event_logs"] == 0  # nothing is kept for runs this process only submitted

    async with in_process_worker(app.app) as worker:
        answers = await asyncio.gather(*executes)
        assert [answer.status_code for answer in answers] == [200] * 200, [answer.text for answer in answers if answer.status_code != 200]
        streams = await asyncio.gather(*followers[50:])
        assert all(parse_sse(stream.text)[-1]["event"] == "end" for stream in streams)
        limit = asyncio.Semaphore(25)

        async def ended(run_id: str) -> str:
            async with limit:
                return (await wait_for_end(app.client, run_id))["pipeline_state"]

        assert await asyncio.gather(*(ended(run_id) for run_id in started[100:])) == ["COMPLETED"] * 200
        assert per_run_memory(worker) == EMPTY
    states = [(await app.client.get(f"/api/v1/runs/{run_id}")).json()["pipeline_state"] for run_id in started[:100]]
    assert states == ["COMPLETED"] * 100
    assert per_run_memory(api) == EMPTY, (waiting, per_run_memory(api))
    print(f"\nAPI process while 500 runs waited for a worker: {waiting}; after they ended: {per_run_memory(api)}")


async def test_the_default_run_timeout_reaches_the_workflow(temporal_app):
    app = await temporal_app()
    assert app.services.settings.run_timeout_seconds == 3600
    run_id = (await app.client.post(START, json=seed_request(dry_run=True))).json()["pipeline_run_id"]
    async with in_process_worker(app.app):
        document = await wait_for_end(app.client, run_id)
    assert document["pipeline_state"] == "COMPLETED"
    history = await app.services.temporal.get_workflow_handle(document["workflow_id"]).fetch_history()
    scheduled = [
        event.activity_task_scheduled_event_attributes
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled[0].activity_type.name == "pipelex_server.execute_run"
    assert scheduled[0].start_to_close_timeout.ToSeconds() == 3600 + 120  # the engine's limit, plus a margin


async def test_a_run_past_its_time_limit_ends_failed_in_temporal_mode_and_is_not_retried(temporal_app, stub):
    app = await temporal_app(run_timeout_seconds=1)
    stub.configure(latency_ms=10_000)
    marker = f"too-slow-{uuid.uuid4().hex[:8]}"
    run_id = (await app.client.post(START, json=seed_request(inputs={"text": marker}))).json()["pipeline_run_id"]
    async with in_process_worker(app.app):
        document = await wait_for_end(app.client, run_id)
    assert document["pipeline_state"] == "FAILED", document
    assert document["error"]["code"] == "run.timed_out"
    events = parse_sse((await app.client.get(f"/api/v1/runs/{run_id}/events")).text)
    running = [event["data"] for event in events if event["data"].get("pipeline_state") == "RUNNING"]
    assert [data.get("attempt") for data in running] == [1] and not any(data.get("retrying") for data in running)
