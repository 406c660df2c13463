"""Background runs: /start, status, list, cancel, events, delete, concurrency slots — through the ASGI app."""

import asyncio
import uuid
from datetime import timedelta

from pipelex_server.store.common import utcnow
from tests.support.bundles import SEED_BUNDLE, SEQUENCE_BUNDLE, main_content, seed_request, unique_bundle
from tests.support.runs import parse_sse, wait_for_end

START = "/api/v1/pipeline/start"


async def test_start_answers_202_at_once_and_the_run_completes(client, stub):
    response = await client.post(START, json=seed_request())
    assert response.status_code == 202, response.text
    body = response.json()
    run_id = body["pipeline_run_id"]
    assert response.headers["location"] == f"/api/v1/runs/{run_id}"
    assert body["pipeline_state"] in ("STARTED", "RUNNING")
    assert body["pipe_output"] is None and body["workflow_id"] is None
    run = await wait_for_end(client, run_id)
    assert run["pipeline_state"] == "COMPLETED"
    assert main_content(run)["text"].startswith("STUB: Summarize")
    assert run["usage"]["tokens"]["output"] > 0
    assert run["started_at"] and run["finished_at"]
    assert stub.stats()["total_calls"] == 1


async def test_invalid_bundle_or_missing_input_is_refused_before_202_and_creates_no_run(client, stub):
    before = (await client.get("/api/v1/runs", params={"limit": 200})).json()["runs"]
    bad_bundle = await client.post(START, json={"mthds_contents": ["domain = [oops"], "inputs": {}})
    assert bad_bundle.status_code == 422 and bad_bundle.json()["code"] == "method.invalid"
    missing = await client.post(START, json=seed_request(inputs={}))
    assert missing.status_code == 422 and missing.json()["code"] == "input.missing"
    unknown_pipe = await client.post(START, json=seed_request(pipe_code="ghost"))
    assert unknown_pipe.status_code == 422 and unknown_pipe.json()["code"] == "request.pipe_not_found"
    after = (await client.get("/api/v1/runs", params={"limit": 200})).json()["runs"]
    assert [run["pipeline_run_id"] for run in after] == [run["pipeline_run_id"] for run in before]
    assert stub.stats()["total_calls"] == 0


async def test_events_tell_the_whole_story_in_order(client):
    inputs = {"note": {"concept": "KitchenNote", "content": "leeks"}}
    run_id = (await client.post(START, json={"mthds_contents": [SEQUENCE_BUNDLE], "inputs": inputs})).json()["pipeline_run_id"]
    await wait_for_end(client, run_id)
    events = parse_sse((await client.get(f"/api/v1/runs/{run_id}/events")).text)
    ids = [event["id"] for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    names = [event["event"] for event in events]
    assert names[0] == "state" and events[0]["data"]["pipeline_state"] == "STARTED"
    assert names[-2:] == ["state", "end"] and events[-1]["data"]["pipeline_state"] == "COMPLETED"
    started = [event["data"]["pipe_code"] for event in events if event["event"] == "pipe_started"]
    finished = [event["data"]["pipe_code"] for event in events if event["event"] == "pipe_finished"]
    assert started[0] == "write_card"
    assert next(event for event in events if event["event"] == "pipe_started")["data"]["pipe_ref"] == "menus.write_card"
    assert set(finished) == {"write_card", "list_dishes", "draft_card", "polish_card"}
    assert all(event["data"]["pipeline_run_id"] == run_id and event["data"]["at"] for event in events)
    # resuming after an id replays only what came after it
    resumed = parse_sse((await client.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(ids[2])})).text)
    assert [event["id"] for event in resumed] == ids[3:]


async def test_list_is_newest_first_filtered_and_paginated(make_app):
    app = await make_app()
    created = []
    for index in range(5):
        body = {"mthds_contents": [unique_bundle(index)], "inputs": {"text": "x"}, "dry_run": True}
        created.append((await app.client.post("/api/v1/pipeline/execute", json=body)).json()["pipeline_run_id"])
    failed = (await app.client.post("/api/v1/pipeline/execute", json=seed_request(inputs={}, dry_run=True))).json()
    everything = (await app.client.get("/api/v1/runs")).json()
    assert [run["pipeline_run_id"] for run in everything["runs"]] == [failed["pipeline_run_id"], *reversed(created)]
    assert everything["next_cursor"] is None

    page1 = (await app.client.get("/api/v1/runs", params={"limit": 2, "state": "COMPLETED"})).json()
    page2 = (await app.client.get("/api/v1/runs", params={"limit": 2, "state": "COMPLETED", "cursor": page1["next_cursor"]})).json()
    page3 = (await app.client.get("/api/v1/runs", params={"limit": 2, "state": "COMPLETED", "cursor": page2["next_cursor"]})).json()
    seen = [run["pipeline_run_id"] for page in (page1, page2, page3) for run in page["runs"]]
    assert seen == list(reversed(created))
    assert page3["next_cursor"] is None
    failed_only = (await app.client.get("/api/v1/runs", params={"state": "FAILED"})).json()["runs"]
    assert [run["pipeline_run_id"] for run in failed_only] == [failed["pipeline_run_id"]]
    by_pipe = (await app.client.get("/api/v1/runs", params={"pipe_code": "nothing-like-this"})).json()["runs"]
    assert by_pipe == []
    bad_cursor = await app.client.get("/api/v1/runs", params={"cursor": "not-a-cursor"})
    assert bad_cursor.status_code == 422


async def test_cancel_stops_a_run_blocked_in_a_slow_provider_call(client, stub):
    stub.configure(latency_ms=30_000)
    run_id = (await client.post(START, json=seed_request())).json()["pipeline_run_id"]
    assert await asyncio.to_thread(stub.wait_in_flight, 1, 30), "the provider call never started"
    response = await client.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code == 202
    assert response.json()["pipeline_state"] == "CANCELLED"
    run = await wait_for_end(client, run_id)
    assert run["pipeline_state"] == "CANCELLED"
    assert run["error"]["code"] == "run.cancelled"
    again = await client.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "run.already_ended"


async def test_queued_runs_wait_for_a_slot_in_order_and_can_be_cancelled_while_queued(make_app, stub):
    app = await make_app(max_concurrent_runs=1)
    stub.configure(latency_ms=300)
    first = (await app.client.post(START, json=seed_request(inputs={"text": "first"}))).json()
    second = (await app.client.post(START, json=seed_request(inputs={"text": "second"}))).json()
    third = (await app.client.post(START, json=seed_request(inputs={"text": "third"}))).json()
    assert first["pipeline_state"] == second["pipeline_state"] == third["pipeline_state"] == "STARTED"
    cancelled = await app.client.post(f"/api/v1/runs/{third['pipeline_run_id']}/cancel")
    assert cancelled.json()["pipeline_state"] == "CANCELLED"
    done_first = await wait_for_end(app.client, first["pipeline_run_id"])
    done_second = await wait_for_end(app.client, second["pipeline_run_id"])
    assert done_first["pipeline_state"] == done_second["pipeline_state"] == "COMPLETED"
    assert done_second["started_at"] >= done_first["finished_at"]
    assert (await wait_for_end(app.client, third["pipeline_run_id"]))["pipeline_state"] == "CANCELLED"
    assert stub.stats()["total_calls"] == 2


async def test_two_hundred_started_runs_with_sixteen_slots_all_complete_with_their_own_output(make_app, stub):
    app = await make_app(max_concurrent_runs=16, sse_max_streams_per_caller=200)  # one stream per run, all at once
    stub.configure(latency_ms=20)
    ids = []
    for index in range(200):
        response = await app.client.post(START, json={"mthds_contents": [unique_bundle(index)], "inputs": {"text": f"n{index}"}})
        assert response.status_code == 202, response.text
        ids.append(response.json()["pipeline_run_id"])
    runs = await asyncio.gather(*(wait_for_end(app.client, run_id) for run_id in ids))
    for index, run in enumerate(runs):
        assert run["pipeline_state"] == "COMPLETED", run
        assert main_content(run)["value"] == f"stub-value-TOKEN-r{index}"
    assert stub.stats()["total_calls"] == 200


async def test_delete_removes_an_ended_run_and_refuses_a_running_one(client, stub):
    done = (await client.post("/api/v1/pipeline/execute", json=seed_request(dry_run=True))).json()
    url = f"/api/v1/runs/{done['pipeline_run_id']}"
    assert (await client.delete(url)).status_code == 204
    assert (await client.get(url)).status_code == 404
    assert (await client.get(url + "/events")).status_code == 404

    stub.configure(latency_ms=2_000)
    running = (await client.post(START, json=seed_request())).json()
    refused = await client.delete(f"/api/v1/runs/{running['pipeline_run_id']}")
    assert refused.status_code == 409 and refused.json()["code"] == "run.not_terminal"
    await client.post(f"/api/v1/runs/{running['pipeline_run_id']}/cancel")


async def test_another_callers_runs_are_invisible(make_app):
    app = await make_app(trust_forwarded_identity_headers=True)
    alice = {"X-User-Id": "alice"}
    bob = {"X-User-Id": "bob"}
    run_id = (await app.client.post(START, json=seed_request(dry_run=True), headers=alice)).json()["pipeline_run_id"]
    await wait_for_end(app.client, run_id, headers=alice)
    for method, path in [
        ("GET", f"/api/v1/runs/{run_id}"),
        ("GET", f"/api/v1/runs/{run_id}/events"),
        ("POST", f"/api/v1/runs/{run_id}/cancel"),
        ("POST", f"/api/v1/runs/{run_id}/callbacks/redeliver"),
        ("DELETE", f"/api/v1/runs/{run_id}"),
    ]:
        response = await app.client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
    assert (await app.client.get("/api/v1/runs", headers=bob)).json()["runs"] == []
    assert (await app.client.get(f"/api/v1/runs/{run_id}", headers=alice)).status_code == 200


async def test_start_is_idempotent_by_run_id(client, stub):
    run_id = f"start-{uuid.uuid4().hex}"
    first = await client.post(START, json=seed_request(pipeline_run_id=run_id))
    second = await client.post(START, json=seed_request(pipeline_run_id=run_id))
    assert first.status_code == second.status_code == 202
    await wait_for_end(client, run_id)
    conflict = await client.post(START, json={"mthds_contents": [SEED_BUNDLE], "inputs": {"text": "other"}, "pipeline_run_id": run_id})
    assert conflict.status_code == 409
    assert stub.stats()["total_calls"] == 1


async def test_run_timeout_ends_a_background_run_failed(make_app, stub):
    app = await make_app(run_timeout_seconds=0.3)
    stub.configure(latency_ms=5_000)
    run_id = (await app.client.post(START, json=seed_request())).json()["pipeline_run_id"]
    run = await wait_for_end(app.client, run_id)
    assert run["pipeline_state"] == "FAILED"
    assert run["error"]["code"] == "run.timed_out"


async def test_retention_purges_only_old_ended_runs(make_app, stub):
    app = await make_app(run_retention_days=1)
    old = (await app.client.post("/api/v1/pipeline/execute", json=seed_request(dry_run=True))).json()["pipeline_run_id"]
    recent = (await app.client.post("/api/v1/pipeline/execute", json=seed_request(dry_run=True))).json()["pipeline_run_id"]
    stub.configure(latency_ms=5_000)
    running = (await app.client.post(START, json=seed_request())).json()["pipeline_run_id"]
    repository = app.services.runs.repository
    long_ago = utcnow() - timedelta(days=2)
    old_key = (await repository.get_public("shared", old))["id"]
    await repository.update(old_key, finished_at=long_ago, created_at=long_ago)
    purged = await app.services.runs.retention.purge_expired()
    assert purged == [old]
    assert (await app.client.get(f"/api/v1/runs/{old}")).status_code == 404
    assert (await app.client.get(f"/api/v1/runs/{recent}")).status_code == 200
    assert (await app.client.get(f"/api/v1/runs/{running}")).status_code == 200
    assert await repository.events_after(old_key, 0) == []
    await app.client.post(f"/api/v1/runs/{running}/cancel")


async def test_start_cancel_and_events_on_both_stores(database_url, make_app, stub):
    app = await make_app(database_url=database_url)
    done = (await app.client.post(START, json=seed_request())).json()
    assert (await wait_for_end(app.client, done["pipeline_run_id"]))["pipeline_state"] == "COMPLETED"
    stub.configure(latency_ms=30_000)
    slow = (await app.client.post(START, json=seed_request(inputs={"text": "slow"}))).json()
    assert await asyncio.to_thread(stub.wait_in_flight, 1, 30)
    assert (await app.client.post(f"/api/v1/runs/{slow['pipeline_run_id']}/cancel")).json()["pipeline_state"] == "CANCELLED"
    events = parse_sse((await app.client.get(f"/api/v1/runs/{slow['pipeline_run_id']}/events")).text)
    assert [event["data"].get("pipeline_state") for event in events if event["event"] == "state"][-1] == "CANCELLED"
