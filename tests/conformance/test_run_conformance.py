"""The run routes behave the same whether runs execute in the API process or on Temporal workers.

Every test here runs twice: against an in-process deployment and against a Temporal one (API process + worker
process + Temporal dev server), all real processes over loopback, with the stub LLM."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.conformance.conftest import CALLBACK_SECRET
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, main_content, seed_request
from tests.support.receiver import Receiver
from tests.support.runs import parse_sse, wait_for_end

pytestmark = pytest.mark.slow

SLOW_PROMPT = "slow-conformance-marker"


def seed_body(**extra: object) -> dict:
    return seed_request(**extra)


async def test_execute_returns_the_completed_run(api, deployment):
    response = await api.post("/api/v1/pipeline/execute", json=seed_body())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pipeline_state"] == "COMPLETED"
    assert isinstance(main_content(body), (str, dict))
    document = (await api.get(f"/api/v1/runs/{body['pipeline_run_id']}")).json()
    assert document["pipeline_state"] == "COMPLETED"
    assert document["usage"]["tokens"]["input"] > 0
    assert (document["workflow_id"] is not None) == (deployment.mode == "temporal")
    ready = (await api.get("/health/ready")).json()
    assert ready["status"] == "ok"
    assert ready["checks"].get("temporal") == ("ok" if deployment.mode == "temporal" else None)


async def test_start_answers_at_once_then_streams_to_completion(api, deployment):
    run_id = f"conf-{uuid.uuid4().hex}"
    response = await api.post("/api/v1/pipeline/start", json=seed_body(pipeline_run_id=run_id))
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["pipeline_state"] == "STARTED"
    assert response.headers["location"] == f"/api/v1/runs/{run_id}"
    if deployment.mode == "temporal":
        # made from the run's server-wide key, not its public id (two callers' runs of one id have two workflows)
        assert answer["workflow_id"].startswith("pipelex-run-")
        assert (await api.get(f"/api/v1/runs/{run_id}")).json()["workflow_id"] == answer["workflow_id"]
    else:
        assert answer["workflow_id"] is None
    stream = await api.get(f"/api/v1/runs/{run_id}/events")
    events = parse_sse(stream.text)
    kinds = [event["event"] for event in events]
    states = [event["data"]["pipeline_state"] for event in events if event["event"] == "state"]
    assert states[0] == "STARTED" and states[-1] == "COMPLETED" and "RUNNING" in states
    assert "pipe_started" in kinds and "pipe_finished" in kinds and kinds[-1] == "end"
    ids = [int(event["id"]) for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # resuming after an id replays only what follows it
    resumed = parse_sse((await api.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(ids[1])})).text)
    assert [int(event["id"]) for event in resumed] == ids[2:]
    document = (await api.get(f"/api/v1/runs/{run_id}")).json()
    assert document["pipeline_state"] == "COMPLETED"
    assert document["pipe_output"] is not None


async def test_a_bad_input_is_refused_at_start_and_creates_no_run(api):
    run_id = f"conf-bad-{uuid.uuid4().hex}"
    response = await api.post(
        "/api/v1/pipeline/start", json={"pipeline_run_id": run_id, "mthds_contents": [SEED_BUNDLE], "inputs": {"wrong": SEED_TEXT}}
    )
    assert response.status_code == 422, response.text
    assert (await api.get(f"/api/v1/runs/{run_id}")).status_code == 404


async def test_cancel_reaches_a_running_run(api, stub):
    stub.configure(timeout={"seconds": 60, "match": SLOW_PROMPT, "count": 1})
    run_id = f"conf-cancel-{uuid.uuid4().hex}"
    body = {"pipeline_run_id": run_id, "mthds_contents": [SEED_BUNDLE], "inputs": {"text": f"{SEED_TEXT} {SLOW_PROMPT} {run_id}"}}
    assert (await api.post("/api/v1/pipeline/start", json=body)).status_code == 202
    assert await asyncio.to_thread(stub.wait_in_flight, 1, 30), "the run never reached the model"
    cancelled = await api.post(f"/api/v1/runs/{run_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    document = await wait_for_end(api, run_id)
    assert document["pipeline_state"] == "CANCELLED"
    assert document["error"]["code"] == "run.cancelled"
    again = await api.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert again.json()["code"] == "run.already_ended"


async def test_a_provider_refusal_fails_the_run_without_retrying_it(api, stub):
    stub.configure(fail={"status": 400, "match": "refuse-me", "count": None})
    run_id = f"conf-fail-{uuid.uuid4().hex}"
    body = {"pipeline_run_id": run_id, "mthds_contents": [SEED_BUNDLE], "inputs": {"text": f"refuse-me {run_id}"}}
    assert (await api.post("/api/v1/pipeline/start", json=body)).status_code == 202
    document = await wait_for_end(api, run_id)
    assert document["pipeline_state"] == "FAILED"
    assert document["error"]["code"] == "provider.failed"
    calls = [call for call in stub.stats()["recent"] if run_id in call["prompt"]]
    assert len(calls) == 1, calls  # a 400 is not worth another attempt: the pipeline ran once


async def test_a_rate_limited_run_is_retried_and_completes(api, stub, deployment):
    # the SDK retries a 429 twice by itself; 4 refusals outlast it, so in Temporal mode the run's next attempt
    # (with back-off) completes it, and in-process the run fails with the rate limit
    stub.configure(fail={"status": 429, "match": "busy-provider", "count": 4})
    run_id = f"conf-429-{uuid.uuid4().hex}"
    body = {"pipeline_run_id": run_id, "mthds_contents": [SEED_BUNDLE], "inputs": {"text": f"busy-provider {run_id}"}}
    assert (await api.post("/api/v1/pipeline/start", json=body)).status_code == 202
    document = await wait_for_end(api, run_id)
    if deployment.mode == "temporal":
        assert document["pipeline_state"] == "COMPLETED", document
        events = parse_sse((await api.get(f"/api/v1/runs/{run_id}/events")).text)
        assert any(event["data"].get("retrying") for event in events if event["event"] == "state")
    else:
        assert document["pipeline_state"] == "FAILED"
        assert document["error"]["status"] == 429


async def test_callbacks_are_signed_and_survive_a_receiver_that_is_down_at_first(api, stub):
    with Receiver(fail_first=2, fail_status=503) as receiver:
        run_id = f"conf-cb-{uuid.uuid4().hex}"
        body = {"pipeline_run_id": run_id, "mthds_contents": [SEED_BUNDLE], "inputs": {"text": run_id}, "callback_urls": [receiver.url]}
        assert (await api.post("/api/v1/pipeline/start", json=body)).status_code == 202
        deliveries = await asyncio.to_thread(receiver.wait_for, 3, 60)
        assert [delivery.status for delivery in deliveries[:3]] == [503, 503, 200]
        assert all(delivery.verify(CALLBACK_SECRET) for delivery in deliveries)
        assert deliveries[-1].json["pipeline_state"] == "COMPLETED"
        assert deliveries[-1].json["pipeline_run_id"] == run_id
        # the receiver being down never ran the pipeline again
        assert len([call for call in stub.stats()["recent"] if run_id in call["prompt"]]) == 1
        document = (await api.get(f"/api/v1/runs/{run_id}")).json()
        for _ in range(100):  # the delivery record lands just after the receiver answered
            if document["callbacks"][0]["delivered_at"]:
                break
            await asyncio.sleep(0.05)
            document = (await api.get(f"/api/v1/runs/{run_id}")).json()
        assert document["callbacks"][0]["attempts"] == 3
        assert document["callbacks"][0]["delivered_at"] is not None

        redelivered = await api.post(f"/api/v1/runs/{run_id}/callbacks/redeliver")
        assert redelivered.status_code == 202
        assert len(await asyncio.to_thread(receiver.wait_for, 4, 30)) == 4


async def test_runs_list_filters_and_delete(api):
    run_id = f"conf-list-{uuid.uuid4().hex}"
    response = await api.post("/api/v1/pipeline/execute", json=seed_body(pipeline_run_id=run_id))
    assert response.status_code == 200
    listed = (await api.get("/api/v1/runs", params={"state": "COMPLETED", "limit": 200})).json()
    assert run_id in [run["pipeline_run_id"] for run in listed["runs"]]
    assert all(run["pipeline_state"] == "COMPLETED" for run in listed["runs"])
    assert (await api.delete(f"/api/v1/runs/{run_id}")).status_code == 204
    assert (await api.get(f"/api/v1/runs/{run_id}")).status_code == 404


async def test_execute_is_idempotent_by_run_id(api, stub):
    run_id = f"conf-idem-{uuid.uuid4().hex}"
    body = {"pipeline_run_id": run_id, "mthds_contents": [SEED_BUNDLE], "inputs": {"text": f"{SEED_TEXT} {run_id}"}}
    first, second = await asyncio.gather(api.post("/api/v1/pipeline/execute", json=body), api.post("/api/v1/pipeline/execute", json=body))
    assert first.status_code == second.status_code == 200
    assert first.json()["pipe_output"] == second.json()["pipe_output"]
    assert len([call for call in stub.stats()["recent"] if run_id in call["prompt"]]) == 1


async def test_a_pdf_sent_as_a_data_url_is_read_by_the_run(api, stub):
    from tests.api.test_documents import PDF_BUNDLE, data_url, document_input, make_pdf

    marker = f"KOALA-{uuid.uuid4().hex[:8]}"
    run_id = f"conf-pdf-{uuid.uuid4().hex}"
    body = {
        "pipeline_run_id": run_id,
        "mthds_contents": [PDF_BUNDLE],
        "inputs": document_input(data_url(make_pdf(marker), "application/pdf")),
    }
    assert (await api.post("/api/v1/pipeline/start", json=body)).status_code == 202
    document = await wait_for_end(api, run_id)
    assert document["pipeline_state"] == "COMPLETED", document
    assert any(marker in call["prompt"] for call in stub.stats()["recent"])


async def test_two_callers_with_one_run_id_each_get_their_own_run(api, stub, deployment):
    """Run ids and idempotency keys are the caller's: the same id from two callers is two runs (two workflows in
    Temporal mode), each with its own output, and the other caller's run answers 404 like an unknown id."""
    run_id = f"conf-two-{uuid.uuid4().hex}"
    alice, bob = {"X-User-Id": "conf-alice"}, {"X-User-Id": "conf-bob"}
    marks = {"conf-alice": f"alice-{run_id[-8:]}", "conf-bob": f"bob-{run_id[-8:]}"}
    answers = {}
    for headers in (alice, bob):
        body = {"pipeline_run_id": run_id, "mthds_contents": [SEED_BUNDLE], "inputs": {"text": marks[headers["X-User-Id"]]}}
        response = await api.post("/api/v1/pipeline/start", json=body, headers=headers)
        assert response.status_code == 202, response.text
        answers[headers["X-User-Id"]] = response.json()
        # a retry by the same caller is answered from its own run (and, in Temporal mode, reuses its workflow)
        again = await api.post("/api/v1/pipeline/start", json=body, headers=headers)
        assert again.status_code == 202 and again.json()["workflow_id"] == response.json()["workflow_id"]
    if deployment.mode == "temporal":
        assert answers["conf-alice"]["workflow_id"] != answers["conf-bob"]["workflow_id"]
    for headers in (alice, bob):
        document = await wait_for_end(api, run_id, headers=headers)
        assert document["pipeline_state"] == "COMPLETED", document
        assert marks[headers["X-User-Id"]] in main_content(document)["text"]
        events = parse_sse((await api.get(f"/api/v1/runs/{run_id}/events", headers=headers)).text)
        assert {event["data"]["pipeline_run_id"] for event in events} == {run_id}
    assert all(len([call for call in stub.stats()["recent"] if mark in call["prompt"]]) == 1 for mark in marks.values())

    # /execute and /v1/start with an Idempotency-Key: one run per caller as well
    key = f"conf-key-{uuid.uuid4().hex}"
    for headers in (alice, bob):
        body = {"mthds_contents": [SEED_BUNDLE], "inputs": {"text": f"{headers['X-User-Id']} {key[-8:]}"}}
        executed = await api.post("/api/v1/pipeline/execute", json={**body, "pipeline_run_id": key}, headers=headers)
        assert executed.status_code == 200, executed.text
        assert headers["X-User-Id"] in main_content(executed.json())["text"]
        started = await api.post("/v1/start", json=body, headers={**headers, "Idempotency-Key": f"v1-{key}"})
        assert started.status_code == 202, started.text
        assert started.json()["pipeline_run_id"] == f"v1-{key}"
        assert (await wait_for_end(api, f"v1-{key}", headers=headers))["pipeline_state"] == "COMPLETED"

    # a third caller sees none of it: 404 exactly as for an id no one uses
    carol = {"X-User-Id": "conf-carol"}
    unknown = await api.get(f"/api/v1/runs/{run_id}-unused", headers=carol)
    for path in (f"/api/v1/runs/{run_id}", f"/api/v1/runs/{key}", f"/v1/runs/v1-{key}/status"):
        answer = await api.get(path, headers=carol)
        assert answer.status_code == 404 and answer.json()["code"] == unknown.json()["code"] == "run.not_found"
    for method, path in (("POST", "cancel"), ("POST", "callbacks/redeliver"), ("DELETE", ""), ("GET", "events")):
        answer = await api.request(method, f"/api/v1/runs/{run_id}/{path}".rstrip("/"), headers=carol)
        assert answer.status_code == 404, (method, path, answer.text)
    # deleting one caller's run leaves the other's
    assert (await api.delete(f"/api/v1/runs/{run_id}", headers=alice)).status_code == 204
    assert (await api.get(f"/api/v1/runs/{run_id}", headers=alice)).status_code == 404
    assert (await api.get(f"/api/v1/runs/{run_id}", headers=bob)).json()["pipeline_state"] == "COMPLETED"
