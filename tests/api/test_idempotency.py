"""pipeline_run_id / Idempotency-Key: the same id with the same body never runs twice."""

import asyncio
import uuid

from tests.support.bundles import seed_request

EXECUTE = "/api/v1/pipeline/execute"


def new_id() -> str:
    return f"run-{uuid.uuid4().hex}"


async def test_same_id_same_body_returns_the_same_run_and_runs_once(client, stub):
    body = seed_request(pipeline_run_id=new_id())
    first = await client.post(EXECUTE, json=body)
    second = await client.post(EXECUTE, json=body)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.json()["pipeline_run_id"] == body["pipeline_run_id"]
    assert stub.stats()["total_calls"] == 1


async def test_concurrent_duplicates_run_once(client, stub):
    stub.configure(latency_ms=200)
    body = seed_request(pipeline_run_id=new_id())
    responses = await asyncio.gather(*(client.post(EXECUTE, json=body) for _ in range(5)))
    assert {response.status_code for response in responses} == {200}
    assert len({response.json()["finished_at"] for response in responses}) == 1
    assert stub.stats()["total_calls"] == 1


async def test_same_id_different_body_is_a_conflict(client, stub):
    run_id = new_id()
    assert (await client.post(EXECUTE, json=seed_request(pipeline_run_id=run_id))).status_code == 200
    response = await client.post(EXECUTE, json=seed_request(pipeline_run_id=run_id, inputs={"text": "other"}))
    assert response.status_code == 409
    assert response.json()["code"] == "request.idempotency_conflict"
    assert stub.stats()["total_calls"] == 1


async def test_idempotency_key_header_means_the_same(client, stub):
    key = new_id()
    first = await client.post(EXECUTE, json=seed_request(), headers={"Idempotency-Key": key})
    second = await client.post(EXECUTE, json=seed_request(pipeline_run_id=key))
    assert first.json()["pipeline_run_id"] == key == second.json()["pipeline_run_id"]
    assert stub.stats()["total_calls"] == 1
    mismatch = await client.post(EXECUTE, json=seed_request(pipeline_run_id=new_id()), headers={"Idempotency-Key": key})
    assert mismatch.status_code == 422


async def test_a_failed_run_replays_its_problem(client, stub):
    body = seed_request(pipeline_run_id=new_id(), inputs={})
    first = await client.post(EXECUTE, json=body)
    second = await client.post(EXECUTE, json=body)
    assert first.status_code == second.status_code == 422
    assert first.json()["code"] == second.json()["code"] == "input.missing"
    assert first.json()["pipeline_run_id"] == second.json()["pipeline_run_id"]
