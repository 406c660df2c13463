"""POST /api/v1/pipeline/execute through the ASGI app, the real runtime and the stub LLM."""

import asyncio

import pytest

from tests.support.bundles import (
    BATCH_BUNDLE,
    CONDITION_BUNDLE,
    PARALLEL_BUNDLE,
    SEED_BUNDLE,
    SEQUENCE_BUNDLE,
    STRUCTURED_BUNDLE,
    main_content,
    seed_request,
    unique_bundle,
)

EXECUTE = "/api/v1/pipeline/execute"


async def test_seed_example_returns_the_summary_and_usage(client, stub):
    response = await client.post(EXECUTE, json=seed_request())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pipeline_state"] == "COMPLETED"
    assert body["dry_run"] is False
    assert main_content(body)["text"].startswith("STUB: Summarize in one sentence:")
    assert body["usage"]["tokens"]["input"] > 0
    assert body["usage"]["tokens"]["output"] > 0
    assert body["usage"]["by_pipe"][0]["pipe_code"] == "summarize"
    assert body["usage"]["cost_usd"] is not None and body["usage"]["cost_usd"] > 0
    assert body["created_at"].endswith("Z") and body["finished_at"].endswith("Z")
    assert stub.stats()["total_calls"] == 1


async def test_execute_is_recorded_as_a_completed_run(client):
    body = (await client.post(EXECUTE, json=seed_request())).json()
    run = await client.get(f"/api/v1/runs/{body['pipeline_run_id']}")
    assert run.status_code == 200
    document = run.json()
    assert document["pipeline_state"] == "COMPLETED"
    assert document["pipe_code"] == "summarize"
    assert document["pipe_output"] == body["pipe_output"]
    assert document["started_at"] is not None


async def test_dry_run_calls_no_provider_and_says_so(client, stub):
    response = await client.post(EXECUTE, json=seed_request(dry_run=True))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True
    assert "DRY RUN" in main_content(body)["text"]
    assert stub.stats()["total_calls"] == 0


async def test_main_pipe_is_used_without_pipe_code(client):
    response = await client.post(EXECUTE, json={"mthds_contents": [SEED_BUNDLE], "inputs": {"text": "hello"}})
    assert response.status_code == 200, response.text


async def test_structured_concept_extracted_by_a_pipe_llm(client):
    response = await client.post(EXECUTE, json={"mthds_contents": [STRUCTURED_BUNDLE], "inputs": {"text": "Jane Doe is 33."}})
    assert response.status_code == 200, response.text
    body = response.json()
    stuff = body["pipe_output"]["working_memory"]["root"][body["main_stuff_name"]]
    assert stuff["concept"] == "contacts.Person"
    assert stuff["content"]["name"] == "stub-name"
    assert stuff["content"]["age"] == 1


async def test_sequence_runs_each_step_once_in_order(client, stub):
    inputs = {"note": {"concept": "KitchenNote", "content": "leeks and potatoes"}}
    response = await client.post(EXECUTE, json={"mthds_contents": [SEQUENCE_BUNDLE], "inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    text = main_content(body)["text"]
    assert text.startswith("STUB: STEP3 polish: STUB: STEP2")
    prompts = stub.stats()["by_prompt"]
    assert sum(prompts.values()) == 3
    assert {prompt.split()[0] for prompt in prompts} == {"STEP1", "STEP2", "STEP3"}


async def test_parallel_runs_both_branches(client, stub):
    response = await client.post(EXECUTE, json={"mthds_contents": [PARALLEL_BUNDLE], "inputs": {"observation": "rain at noon"}})
    assert response.status_code == 200, response.text
    root = response.json()["pipe_output"]["working_memory"]["root"]
    assert root["summary"]["content"]["text"].startswith("STUB: BRANCH-A")
    assert root["title"]["content"]["text"].startswith("STUB: BRANCH-B")
    assert stub.stats()["total_calls"] == 2


async def test_batch_maps_the_branch_over_the_list(client, stub):
    inputs = {"crates": {"concept": "Crate", "content": ["apples", "pears", "plums"]}}
    response = await client.post(EXECUTE, json={"mthds_contents": [BATCH_BUNDLE], "inputs": inputs})
    assert response.status_code == 200, response.text
    items = main_content(response.json())["items"]
    assert [item["text"] for item in items] == [f"STUB: Label this crate: {fruit}" for fruit in ("apples", "pears", "plums")]
    assert stub.stats()["total_calls"] == 3


@pytest.mark.parametrize(("size", "belt"), [("small", "SMALL-BELT"), ("large", "LARGE-BELT")])
async def test_condition_routes_by_expression(client, size, belt):
    inputs = {"parcel": {"concept": "Parcel", "content": {"size": size, "address": "Lyon"}}}
    response = await client.post(EXECUTE, json={"mthds_contents": [CONDITION_BUNDLE], "inputs": inputs})
    assert response.status_code == 200, response.text
    assert main_content(response.json())["text"] == f"STUB: {belt} for Lyon"


async def test_fifty_concurrent_executes_each_get_their_own_result(client, stub):
    async def one(index: int) -> tuple[int, dict]:
        response = await client.post(EXECUTE, json={"mthds_contents": [unique_bundle(index)], "inputs": {"text": f"item {index}"}})
        assert response.status_code == 200, response.text
        return index, response.json()

    results = await asyncio.gather(*(one(index) for index in range(50)))
    for index, body in results:
        stuff = body["pipe_output"]["working_memory"]["root"][body["main_stuff_name"]]
        assert stuff["concept"] == f"iso{index}.Result"
        assert stuff["content"]["value"] == f"stub-value-TOKEN-r{index}"
    assert len({body["pipeline_run_id"] for _, body in results}) == 50
    assert stub.stats()["total_calls"] == 50
