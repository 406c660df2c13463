"""Per-caller limits: active runs (counted in the run store, across processes), open event streams (per process,
freed when a client disconnects), callback redeliveries (counted on the run); and Last-Event-ID that cannot be an
event id is refused, never a 500."""

import asyncio
import contextlib
import uuid

import httpx
import pytest

from pipelex_server.runs.events import numbered
from pipelex_server.runs.model import Caller
from pipelex_server.store.common import lease_deadline, utcnow
from tests.support.bundles import seed_request
from tests.support.receiver import Receiver
from tests.support.runs import parse_sse, served, wait_for_end

START = "/api/v1/pipeline/start"
EXECUTE = "/api/v1/pipeline/execute"
ALICE = {"X-User-Id": "alice"}
BOB = {"X-User-Id": "bob"}
SECRET = "limits-callback-secret"


def caller(name: str) -> dict[str, str]:
    """A caller of its own (the PostgreSQL store is shared by the session: other tests' runs must not count)."""
    return {"X-User-Id": f"{name}-{uuid.uuid4().hex[:8]}"}


def slow_request(**extra: object) -> dict:
    return seed_request(inputs={"text": f"slow {uuid.uuid4().hex[:8]}"}, **extra)


async def cancel_all(client: httpx.AsyncClient, run_ids: list[str], headers: dict[str, str]) -> None:
    for run_id in run_ids:
        await client.post(f"/api/v1/runs/{run_id}/cancel", headers=headers)


# ---------------------------------------------------------------- active runs


async def test_a_caller_at_its_active_limit_is_refused_and_others_are_not(make_app, database_url, stub):
    app = await make_app(database_url=database_url, trust_forwarded_identity_headers=True, max_active_runs_per_caller=2)
    alice, bob = caller("alice"), caller("bob")
    stub.configure(latency_ms=30_000)
    bodies = [slow_request(pipeline_run_id=f"mine-{index}-{uuid.uuid4().hex}") for index in range(2)]
    mine = [(await app.client.post(START, json=body, headers=alice)).json()["pipeline_run_id"] for body in bodies]
    refused = await app.client.post(START, json=slow_request(), headers=alice)
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "run.too_many_active" and refused.json()["params"] == {"limit": 2}
    assert int(refused.headers["retry-after"]) > 0
    executed = await app.client.post(EXECUTE, json=slow_request(dry_run=True), headers=alice)
    assert executed.status_code == 429 and executed.json()["code"] == "run.too_many_active"
    protocol_body = {"mthds_contents": seed_request()["mthds_contents"], "inputs": {"text": "more"}}
    protocol = await app.client.post("/v1/start", json=protocol_body, headers=alice)
    assert protocol.status_code == 429 and protocol.json()["code"] == "run.too_many_active"
    # a retry of one of her runs is not a new run: it is answered from that run
    retried = await app.client.post(START, json=bodies[1], headers=alice)
    assert retried.status_code == 202 and retried.json()["pipeline_run_id"] == mine[1]
    listed = (await app.client.get("/api/v1/runs", headers=alice)).json()["runs"]
    assert sorted(run["pipeline_run_id"] for run in listed) == sorted(mine)
    # another caller is not blocked by her
    theirs = await app.client.post(START, json=slow_request(), headers=bob)
    assert theirs.status_code == 202, theirs.text
    # once one of hers ends, she may start another
    assert (await app.client.post(f"/api/v1/runs/{mine[0]}/cancel", headers=alice)).json()["pipeline_state"] == "CANCELLED"
    again = await app.client.post(START, json=slow_request(), headers=alice)
    assert again.status_code == 202, again.text
    await cancel_all(app.client, [mine[1], again.json()["pipeline_run_id"]], alice)
    await cancel_all(app.client, [theirs.json()["pipeline_run_id"]], bob)


async def test_a_retried_start_at_the_limit_is_answered_from_its_run(make_app, stub):
    app = await make_app(max_active_runs_per_caller=1)
    stub.configure(latency_ms=30_000)
    body = slow_request(pipeline_run_id=f"retry-{uuid.uuid4().hex}")
    first = await app.client.post(START, json=body)
    again = await app.client.post(START, json=body)
    assert first.status_code == again.status_code == 202
    assert first.json()["created_at"] == again.json()["created_at"]
    await cancel_all(app.client, [body["pipeline_run_id"]], {})


async def test_concurrent_starts_never_pass_the_limit(make_app, database_url, stub):
    app = await make_app(database_url=database_url, max_active_runs_per_caller=3, trust_forwarded_identity_headers=True)
    erin = caller("erin")
    stub.configure(latency_ms=30_000)
    answers = await asyncio.gather(*(app.client.post(START, json=slow_request(), headers=erin) for _ in range(8)))
    assert sorted(answer.status_code for answer in answers) == [202] * 3 + [429] * 5, [answer.text for answer in answers]
    await cancel_all(app.client, [answer.json()["pipeline_run_id"] for answer in answers if answer.status_code == 202], erin)


async def test_the_active_limit_holds_across_processes_sharing_the_store(make_app, database_url, stub):
    first = await make_app(database_url=database_url, max_active_runs_per_caller=2, trust_forwarded_identity_headers=True)
    second = await make_app(database_url=database_url, max_active_runs_per_caller=2, trust_forwarded_identity_headers=True)
    carol = caller("carol")
    stub.configure(latency_ms=30_000)
    started = [(await first.client.post(START, json=slow_request(), headers=carol)).json()["pipeline_run_id"] for _ in range(2)]
    refused = await second.client.post(START, json=slow_request(), headers=carol)
    assert refused.status_code == 429 and refused.json()["code"] == "run.too_many_active"
    await cancel_all(first.client, started, carol)
    accepted = await second.client.post(START, json=slow_request(dry_run=True), headers=carol)
    assert accepted.status_code == 202, accepted.text
    assert (await wait_for_end(second.client, accepted.json()["pipeline_run_id"], headers=carol))["pipeline_state"] == "COMPLETED"


# ---------------------------------------------------------------- event streams


async def test_open_streams_are_limited_per_caller_and_a_disconnect_frees_its_slot(make_app, stub):
    app = await make_app(trust_forwarded_identity_headers=True, sse_max_streams_per_caller=2, allowed_hosts=["testserver", "127.0.0.1"])
    slots = app.services.runs.streams
    stub.configure(latency_ms=30_000)
    run_id = (await app.client.post(START, json=slow_request(), headers=ALICE)).json()["pipeline_run_id"]
    theirs = (await app.client.post(START, json=slow_request(dry_run=True), headers=BOB)).json()["pipeline_run_id"]
    url = f"/api/v1/runs/{run_id}/events"
    async with served(app.app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http, contextlib.AsyncExitStack() as streams:
        opened = []
        for _ in range(2):
            response = await streams.enter_async_context(http.stream("GET", url, headers=ALICE))
            assert response.status_code == 200
            chunks = response.aiter_bytes()  # kept: dropping a half-read iterator closes its connection
            assert b"event: state" in await anext(chunks)  # the stream is live
            opened.append((response, chunks))
        assert slots.open_for("alice") == 2
        refused = await http.get(url, headers=ALICE)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "events.too_many_streams" and int(refused.headers["retry-after"]) > 0
        # another caller has slots of its own
        bobs = await http.get(f"/api/v1/runs/{theirs}/events", headers=BOB)
        assert bobs.status_code == 200 and parse_sse(bobs.text)[-1]["event"] == "end"

        await opened[0][0].aclose()  # the client goes away
        await asyncio.wait_for(slots.wait_open_at_most("alice", 1), 10)
        async with http.stream("GET", url, headers=ALICE) as response:
            assert response.status_code == 200
            assert b"event: state" in await anext(response.aiter_bytes())
        await asyncio.wait_for(slots.wait_open_at_most("alice", 1), 10)
        await app.client.post(f"/api/v1/runs/{run_id}/cancel", headers=ALICE)
        # the stream still open ends with its run, and gives its slot back
        await asyncio.wait_for(slots.wait_open_at_most("alice", 0), 10)
    assert slots.callers == 0


@pytest.mark.parametrize(
    "header",
    [
        "1e3",
        "-1",
        "+1",
        " 12",
        "12 ",
        "0x10",
        "1.0",
        "99999999999",
        "2147483648",
        "9" * 10_000,
        "\u0661\u0662".encode(),
        "\uff11\uff12".encode(),
    ],
    ids=[
        "exponent",
        "negative",
        "plus",
        "leading-space",
        "trailing-space",
        "hex",
        "decimal",
        "too-big",
        "int32-overflow",
        "10k-digits",
        "arabic-indic",
        "fullwidth",
    ],
)
async def test_a_last_event_id_that_is_not_an_event_id_is_refused(client, header):
    run_id = (await client.post(EXECUTE, json=seed_request(dry_run=True))).json()["pipeline_run_id"]
    response = await client.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": header})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "request.invalid_header"
    assert response.json()["params"] == {"header": "Last-Event-ID"}


async def test_a_stream_of_an_ended_run_resumed_at_or_past_its_end_ends_at_once(client):
    run_id = (await client.post(EXECUTE, json=seed_request(dry_run=True))).json()["pipeline_run_id"]
    events = parse_sse((await client.get(f"/api/v1/runs/{run_id}/events")).text)
    last = events[-1]["id"]
    for resume in (last, last + 1, 2**31 - 1):
        response = await asyncio.wait_for(client.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(resume)}), 5)
        assert response.status_code == 200 and parse_sse(response.text) == []
    tail = parse_sse((await client.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(last - 1)})).text)
    assert [event["event"] for event in tail] == ["end"]
    empty = await client.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": ""})
    assert [event["id"] for event in parse_sse(empty.text)] == [event["id"] for event in events]


async def _running_run(repository, caller_id: str) -> dict:
    """A run another process executes (its lease is live): this process only reads it."""
    now = utcnow()
    key, public_id = uuid.uuid4().hex, f"elsewhere-{uuid.uuid4().hex}"
    row = {
        "id": key,
        "public_id": public_id,
        "caller_id": caller_id,
        "kind": "start",
        "state": "RUNNING",
        "pipe_code": None,
        "request_hash": "h",
        "request": seed_request(),
        "dry_run": True,
        "created_at": now,
        "updated_at": now,
        "started_at": now,
        "lease_owner": "another-process",
        "lease_expires_at": lease_deadline(600),
        "cancel_requested": False,
    }
    assert await repository.insert_run(row, events=[numbered(public_id, 1, "state", {"pipeline_state": "RUNNING"})])
    return row


@pytest.mark.parametrize("change", ["deleted", "another_caller"])
async def test_an_open_stream_ends_when_its_run_is_gone_or_no_longer_the_callers(make_app, database_url, change):
    app = await make_app(database_url=database_url)
    service, repository = app.services.runs, app.services.runs.repository
    row = await _running_run(repository, "dora")
    stream = await service.follow_events(caller=Caller(id="dora"), run_id=row["public_id"], after_seq=0)
    assert (await anext(stream))["data"]["pipeline_run_id"] == row["public_id"]
    waiting = asyncio.create_task(anext(stream))  # the reader waits for the next event
    if change == "deleted":  # by another process: nothing here is told
        await repository.update(row["id"], state="FAILED")
        assert await repository.delete_terminal(row["id"])
    else:
        await repository.update(row["id"], caller_id="someone-else")
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 10)
    assert service.streams.open_for("dora") == 0
    assert service.events.tracked == (0, 0)


# ---------------------------------------------------------------- redeliveries


async def test_redeliveries_are_limited_per_run_and_counted_in_the_store(make_app, database_url):
    settings = {
        "database_url": database_url,
        "completion_callback_secret": SECRET,
        "callback_allow_private_hosts": True,
        "callback_backoff_seconds": 0.05,
        "callback_max_redeliveries": 3,
    }
    app = await make_app(**settings)
    with Receiver() as receiver:
        run_id = (await app.client.post(EXECUTE, json=seed_request(dry_run=True, callback_urls=[receiver.url]))).json()["pipeline_run_id"]
        await asyncio.to_thread(receiver.wait_for, 1)
        assert (await app.client.post(f"/api/v1/runs/{run_id}/callbacks/redeliver")).status_code == 202
        await asyncio.to_thread(receiver.wait_for, 2)
        # three at once for the last two redeliveries: exactly two are granted
        answers = await asyncio.gather(*(app.client.post(f"/api/v1/runs/{run_id}/callbacks/redeliver") for _ in range(3)))
        assert sorted(answer.status_code for answer in answers) == [202, 202, 429]
        await asyncio.to_thread(receiver.wait_for, 3)
        refused = next(answer for answer in answers if answer.status_code == 429).json()
        assert refused["code"] == "callback.redelivery_limit" and refused["params"] == {"limit": 3}
        assert "CALLBACK_MAX_REDELIVERIES" in refused["detail"]
        # another process sharing the store counts the same redeliveries
        other = await make_app(**settings)
        again = await other.client.post(f"/api/v1/runs/{run_id}/callbacks/redeliver")
        assert again.status_code == 429 and again.json()["code"] == "callback.redelivery_limit"

    # a run without callbacks has nothing to redeliver, and that costs it nothing
    plain = (await app.client.post(EXECUTE, json=seed_request(dry_run=True))).json()["pipeline_run_id"]
    for _ in range(4):
        answer = await app.client.post(f"/api/v1/runs/{plain}/callbacks/redeliver")
        assert answer.status_code == 409 and answer.json()["code"] == "callback.none"
