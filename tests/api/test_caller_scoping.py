"""Runs belong to their caller: run ids and idempotency keys are scoped to the caller, on SQLite and PostgreSQL.

Two callers (AUTH_MODE=none with forwarded identities) may use the same ``pipeline_run_id`` or ``Idempotency-Key``:
each gets its own run, with its own output, events, stored objects and callbacks, and no answer tells one of them
that the other's run exists."""

import asyncio
import json
import uuid

import pytest

from tests.support.bundles import SEED_BUNDLE, main_content, seed_request
from tests.support.receiver import Receiver
from tests.support.runs import parse_sse, wait_for_end

START = "/api/v1/pipeline/start"
EXECUTE = "/api/v1/pipeline/execute"
ALICE = {"X-User-Id": "alice"}
BOB = {"X-User-Id": "bob"}
SECRET = "caller-scoping-callback-secret"


def new_id() -> str:
    return f"shared-{uuid.uuid4().hex}"


def mark(run_id: str) -> str:
    """A short marker of the run id (the stub echoes only the start of a prompt)."""
    return run_id[-8:]


def calls_with(stub, text: str) -> int:
    return sum(count for prompt, count in stub.stats()["by_prompt"].items() if text in prompt)


def without_request_id(response) -> dict:
    return {key: value for key, value in response.json().items() if key != "request_id"}


@pytest.fixture
async def app(make_app, database_url):
    return await make_app(
        database_url=database_url,
        trust_forwarded_identity_headers=True,
        completion_callback_secret=SECRET,
        callback_allow_private_hosts=True,
        callback_backoff_seconds=0.05,
    )


async def test_start_same_id_from_two_callers_makes_two_runs_each_with_its_own_output(app, stub):
    run_id = new_id()
    alice = await app.client.post(START, json=seed_request(pipeline_run_id=run_id, inputs={"text": f"alice {mark(run_id)}"}), headers=ALICE)
    bob = await app.client.post(START, json=seed_request(pipeline_run_id=run_id, inputs={"text": f"bob {mark(run_id)}"}), headers=BOB)
    assert alice.status_code == bob.status_code == 202, (alice.text, bob.text)
    assert alice.json()["pipeline_run_id"] == bob.json()["pipeline_run_id"] == run_id
    assert alice.headers["location"] == bob.headers["location"] == f"/api/v1/runs/{run_id}"
    alice_run = await wait_for_end(app.client, run_id, headers=ALICE)
    bob_run = await wait_for_end(app.client, run_id, headers=BOB)
    assert f"alice {mark(run_id)}" in main_content(alice_run)["text"] and "bob" not in main_content(alice_run)["text"]
    assert f"bob {mark(run_id)}" in main_content(bob_run)["text"] and "alice" not in main_content(bob_run)["text"]
    for headers, who in ((ALICE, "alice"), (BOB, "bob")):
        events = parse_sse((await app.client.get(f"/api/v1/runs/{run_id}/events", headers=headers)).text)
        assert all(event["data"]["pipeline_run_id"] == run_id for event in events)
        assert events[-1]["event"] == "end"
        listed = (await app.client.get("/api/v1/runs", params={"limit": 200}, headers=headers)).json()["runs"]
        mine = [run for run in listed if run["pipeline_run_id"] == run_id]
        assert len(mine) == 1 and who in main_content(mine[0])["text"]

    # the same body from both callers is still two runs: the pipeline runs once for each
    same = new_id()
    body = seed_request(pipeline_run_id=same, inputs={"text": f"same {mark(same)}"})
    first = await app.client.post(START, json=body, headers=ALICE)
    second = await app.client.post(START, json=body, headers=BOB)
    assert first.status_code == second.status_code == 202
    await wait_for_end(app.client, same, headers=ALICE)
    await wait_for_end(app.client, same, headers=BOB)
    assert calls_with(stub, f"same {mark(same)}") == 2

    # each caller's id still makes its own requests idempotent
    again = await app.client.post(START, json=body, headers=ALICE)
    assert again.status_code == 202 and again.json()["created_at"] == first.json()["created_at"]
    conflict = await app.client.post(START, json=seed_request(pipeline_run_id=same, inputs={"text": "other"}), headers=ALICE)
    assert conflict.status_code == 409 and conflict.json()["code"] == "request.idempotency_conflict"
    assert calls_with(stub, f"same {mark(same)}") == 2


async def test_execute_same_id_from_two_callers_at_once_runs_once_for_each(app, stub):
    stub.configure(latency_ms=200)
    run_id = new_id()
    same = seed_request(pipeline_run_id=run_id, inputs={"text": f"both {mark(run_id)}"})
    answers = await asyncio.gather(
        *(app.client.post(EXECUTE, json=same, headers=headers) for headers in (ALICE, BOB, ALICE, BOB)),
    )
    assert [answer.status_code for answer in answers] == [200] * 4, [answer.text for answer in answers]
    alice_first, bob_first, alice_again, bob_again = (answer.json() for answer in answers)
    assert alice_first == alice_again and bob_first == bob_again  # one run per caller, whoever got there first
    assert alice_first["created_at"] != bob_first["created_at"] or alice_first["finished_at"] != bob_first["finished_at"]
    assert calls_with(stub, f"both {mark(run_id)}") == 2

    other = new_id()
    alice = await app.client.post(EXECUTE, json=seed_request(pipeline_run_id=other, inputs={"text": f"alice {mark(other)}"}), headers=ALICE)
    bob = await app.client.post(EXECUTE, json=seed_request(pipeline_run_id=other, inputs={"text": f"bob {mark(other)}"}), headers=BOB)
    assert alice.status_code == bob.status_code == 200
    assert f"alice {mark(other)}" in main_content(alice.json())["text"]
    assert f"bob {mark(other)}" in main_content(bob.json())["text"]


async def test_protocol_idempotency_keys_are_per_caller(app, stub):
    key = new_id()
    bodies = {who: {"mthds_contents": [SEED_BUNDLE], "inputs": {"text": f"{who} {mark(key)}"}} for who in ("alice", "bob")}
    alice = await app.client.post("/v1/start", json=bodies["alice"], headers={**ALICE, "Idempotency-Key": key})
    bob = await app.client.post("/v1/start", json=bodies["bob"], headers={**BOB, "Idempotency-Key": key})
    assert alice.status_code == bob.status_code == 202, (alice.text, bob.text)
    assert alice.json()["pipeline_run_id"] == bob.json()["pipeline_run_id"] == key
    for headers, who in ((ALICE, "alice"), (BOB, "bob")):
        await wait_for_end(app.client, key, headers=headers)
        results = await app.client.get(f"/v1/runs/{key}/results", headers=headers)
        assert results.status_code == 200, results.text
        assert f"{who} {mark(key)}" in json.dumps(results.json()) and ("bob" if who == "alice" else "alice") not in json.dumps(
            results.json()
        )
        progress = await app.client.get(f"/v1/runs/{key}/progress", headers=headers)
        assert progress.status_code == 200 and progress.json()["status"] == "succeeded"
    # a key that is not a run id is hashed into one: the same for both callers, still two runs
    odd_key = f"order #{uuid.uuid4().hex} from the shop"
    answers = [
        await app.client.post("/v1/execute", json=bodies[who], headers={**headers, "Idempotency-Key": odd_key})
        for headers, who in ((ALICE, "alice"), (BOB, "bob"))
    ]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[0].json()["pipeline_run_id"] == answers[1].json()["pipeline_run_id"]
    assert calls_with(stub, f"alice {mark(key)}") == 2 and calls_with(stub, f"bob {mark(key)}") == 2


async def test_another_callers_id_answers_exactly_like_an_unknown_one(app):
    run_id = new_id()
    routes = [
        ("GET", f"/api/v1/runs/{run_id}"),
        ("GET", f"/api/v1/runs/{run_id}/output"),
        ("GET", f"/api/v1/runs/{run_id}/events"),
        ("POST", f"/api/v1/runs/{run_id}/cancel"),
        ("POST", f"/api/v1/runs/{run_id}/callbacks/redeliver"),
        ("DELETE", f"/api/v1/runs/{run_id}"),
        ("GET", f"/v1/runs/{run_id}/status"),
        ("GET", f"/v1/runs/{run_id}/results"),
        ("GET", f"/v1/runs/{run_id}/progress"),
    ]
    unknown = {route: await app.client.request(*route, headers=ALICE) for route in routes}
    with Receiver() as receiver:
        body = seed_request(pipeline_run_id=run_id, dry_run=True, callback_urls=[receiver.url])
        assert (await app.client.post(EXECUTE, json=body, headers=BOB)).status_code == 200
        await asyncio.to_thread(receiver.wait_for, 1)
    for route in routes:
        answer = await app.client.request(*route, headers=ALICE)
        assert answer.status_code == unknown[route].status_code == 404, (route, answer.text)
        assert without_request_id(answer) == without_request_id(unknown[route]), route
        assert answer.headers["content-type"] == unknown[route].headers["content-type"]
    assert run_id not in [run["pipeline_run_id"] for run in (await app.client.get("/api/v1/runs", headers=ALICE)).json()["runs"]]
    # none of it touched bob's run
    document = (await app.client.get(f"/api/v1/runs/{run_id}", headers=BOB)).json()
    assert document["pipeline_state"] == "COMPLETED" and document["callbacks"][0]["attempts"] == 1


async def test_two_callers_runs_of_one_id_keep_their_stored_inputs_apart(app):
    from tests.api.test_documents import EXTRACT_ONLY_BUNDLE, data_url, document_input, make_pdf

    run_id = new_id()
    store = app.services.store
    for headers, who in ((ALICE, "alice"), (BOB, "bob")):
        body = {
            "pipeline_run_id": run_id,
            "mthds_contents": [EXTRACT_ONLY_BUNDLE],
            "inputs": document_input(data_url(make_pdf(f"{who} document"), "application/pdf")),
        }
        answer = await app.client.post(EXECUTE, json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert f"{who} document" in json.dumps(answer.json())
    assert await store.list_keys(f"alice/runs/{run_id}") and await store.list_keys(f"bob/runs/{run_id}")
    assert (await app.client.delete(f"/api/v1/runs/{run_id}", headers=ALICE)).status_code == 204
    assert await store.list_keys(f"alice/runs/{run_id}") == []
    assert await store.list_keys(f"bob/runs/{run_id}")
    assert (await app.client.get(f"/api/v1/runs/{run_id}", headers=BOB)).json()["pipeline_state"] == "COMPLETED"
    # alice may use the id again: a new run of hers
    again = await app.client.post(EXECUTE, json=seed_request(pipeline_run_id=run_id, dry_run=True), headers=ALICE)
    assert again.status_code == 200 and again.json()["pipeline_run_id"] == run_id


async def test_callbacks_of_two_callers_runs_of_one_id_are_signed_with_that_id(app):
    run_id = new_id()
    with Receiver() as receiver:
        for headers in (ALICE, BOB):
            body = seed_request(pipeline_run_id=run_id, dry_run=True, callback_urls=[receiver.url])
            assert (await app.client.post(START, json=body, headers=headers)).status_code == 202
        deliveries = await asyncio.to_thread(receiver.wait_for, 2)
    assert [delivery.json["pipeline_run_id"] for delivery in deliveries] == [run_id, run_id]
    assert [delivery.headers["webhook-id"] for delivery in deliveries] == [run_id, run_id]
    assert all(delivery.verify(SECRET) for delivery in deliveries)
