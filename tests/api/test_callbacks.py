"""Signed completion callbacks to a real receiver on loopback."""

import asyncio
import logging

import pytest

from pipelex_server.runs.callbacks import completion_signature, webhook_signature
from tests.support.bundles import seed_request
from tests.support.receiver import Receiver
from tests.support.runs import wait_for_end

START = "/api/v1/pipeline/start"
SECRET = "callback-secret-for-tests"


@pytest.fixture
async def callback_app(make_app):
    return await make_app(
        completion_callback_secret=SECRET, callback_allow_private_hosts=True, callback_backoff_seconds=0.05, callback_max_attempts=4
    )


async def test_receiver_gets_the_run_document_with_both_valid_signatures(callback_app):
    with Receiver() as receiver:
        run_id = (await callback_app.client.post(START, json=seed_request(callback_urls=[receiver.url]))).json()["pipeline_run_id"]
        run = await wait_for_end(callback_app.client, run_id)
        (delivery,) = await asyncio.to_thread(receiver.wait_for, 1)
    assert delivery.verify(SECRET)
    assert delivery.json["pipeline_run_id"] == run_id
    assert delivery.json["pipeline_state"] == "COMPLETED"
    assert delivery.json["pipe_output"] == run["pipe_output"]
    assert delivery.headers["webhook-id"] == run_id
    assert delivery.path == "/hook"


async def test_a_tampered_body_fails_verification(callback_app):
    with Receiver() as receiver:
        await callback_app.client.post(START, json=seed_request(callback_urls=[receiver.url], dry_run=True))
        (delivery,) = await asyncio.to_thread(receiver.wait_for, 1)
    delivery.body = delivery.body.replace(b"COMPLETED", b"FAILED")
    assert not delivery.verify(SECRET)


async def test_a_receiver_failing_twice_gets_retried_and_one_success_is_recorded(callback_app):
    with Receiver(fail_first=2) as receiver:
        run_id = (await callback_app.client.post(START, json=seed_request(callback_urls=[receiver.url], dry_run=True))).json()[
            "pipeline_run_id"
        ]
        deliveries = await asyncio.to_thread(receiver.wait_for, 3)
        await callback_app.services.runs.deliverer.wait_attempts_recorded(3)
    assert [delivery.status for delivery in deliveries] == [500, 500, 200]
    assert len({delivery.headers["webhook-id"] for delivery in deliveries}) == 1
    record = (await callback_app.client.get(f"/api/v1/runs/{run_id}")).json()["callbacks"][0]
    assert record["attempts"] == 3
    assert record["last_status"] == 200
    assert record["delivered_at"] is not None


async def test_attempts_stop_at_the_configured_maximum(callback_app):
    with Receiver(fail_first=100, fail_status=503) as receiver:
        run_id = (await callback_app.client.post(START, json=seed_request(callback_urls=[receiver.url], dry_run=True))).json()[
            "pipeline_run_id"
        ]
        deliveries = await asyncio.to_thread(receiver.wait_for, 4)
        await callback_app.services.runs.deliverer.wait_attempts_recorded(4)
    assert len(deliveries) == 4
    record = (await callback_app.client.get(f"/api/v1/runs/{run_id}")).json()["callbacks"][0]
    assert record["next_attempt_at"] is None
    assert record["attempts"] == 4 and record["delivered_at"] is None and record["last_status"] == 503


async def test_redeliver_grants_a_fresh_budget_after_the_attempts_ran_out(callback_app):
    with Receiver(fail_first=4, fail_status=500) as receiver:
        run_id = (await callback_app.client.post(START, json=seed_request(callback_urls=[receiver.url], dry_run=True))).json()[
            "pipeline_run_id"
        ]
        await asyncio.to_thread(receiver.wait_for, 4)
        await callback_app.services.runs.deliverer.wait_attempts_recorded(4)
        assert (await callback_app.client.post(f"/api/v1/runs/{run_id}/callbacks/redeliver")).status_code == 202
        deliveries = await asyncio.to_thread(receiver.wait_for, 5)
        await callback_app.services.runs.deliverer.wait_attempts_recorded(5)
    assert deliveries[4].status == 200
    record = (await callback_app.client.get(f"/api/v1/runs/{run_id}")).json()["callbacks"][0]
    assert record["attempts"] == 5 and record["delivered_at"] is not None
    listed = (await callback_app.client.get("/api/v1/runs")).json()["runs"]
    assert next(run for run in listed if run["pipeline_run_id"] == run_id)["callbacks"][0]["attempts"] == 5


async def test_redeliver_sends_again(callback_app):
    with Receiver() as receiver:
        run_id = (await callback_app.client.post(START, json=seed_request(callback_urls=[receiver.url], dry_run=True))).json()[
            "pipeline_run_id"
        ]
        await asyncio.to_thread(receiver.wait_for, 1)
        await callback_app.services.runs.deliverer.wait_attempts_recorded(1)
        response = await callback_app.client.post(f"/api/v1/runs/{run_id}/callbacks/redeliver")
        assert response.status_code == 202
        deliveries = await asyncio.to_thread(receiver.wait_for, 2)
    assert deliveries[1].headers["webhook-id"] == deliveries[0].headers["webhook-id"] == run_id


async def test_callbacks_without_a_secret_are_refused_and_create_no_run(make_app):
    app = await make_app(callback_allow_private_hosts=True)
    response = await app.client.post(START, json=seed_request(callback_urls=["http://127.0.0.1:9/hook"], dry_run=True))
    assert response.status_code == 422
    assert response.json()["code"] == "callback.secret_missing"
    assert (await app.client.get("/api/v1/runs")).json()["runs"] == []


async def test_metadata_addresses_are_refused_even_when_private_hosts_are_allowed(callback_app):
    response = await callback_app.client.post(
        START, json=seed_request(callback_urls=["http://169.254.169.254/latest/meta-data"], dry_run=True)
    )
    assert response.status_code == 422 and response.json()["code"] == "callback.url_refused"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "file:///etc/passwd",
        "ftp://example.com/x",
        "http://user:pass@example.com/hook",
        "not a url",
    ],
)
async def test_hostile_callback_urls_are_refused(make_app, url):
    app = await make_app(completion_callback_secret=SECRET)
    response = await app.client.post(START, json=seed_request(callback_urls=[url], dry_run=True))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "callback.url_refused"


async def test_at_most_five_callback_urls(callback_app):
    urls = [f"http://127.0.0.1:{9000 + index}/hook" for index in range(6)]
    response = await callback_app.client.post(START, json=seed_request(callback_urls=urls, dry_run=True))
    assert response.status_code == 422


def test_signature_schemes_match_the_published_algorithms():
    import base64
    import hashlib
    import hmac

    assert completion_signature("s", "run-1") == hmac.new(b"s", b"run-1", hashlib.sha256).hexdigest()
    key = base64.b64encode(b"raw-key-bytes").decode()
    expected = base64.b64encode(hmac.new(b"raw-key-bytes", b"id.10.{}", hashlib.sha256).digest()).decode()
    assert webhook_signature("whsec_" + key, "id", 10, b"{}") == "v1," + expected


async def test_callback_logs_never_show_the_query_string(make_app, caplog):
    app = await make_app(
        completion_callback_secret=SECRET, callback_allow_private_hosts=True, callback_backoff_seconds=0.05, callback_max_attempts=2
    )
    caplog.set_level(logging.INFO, logger="httpx")  # the HTTP client's own request lines, as an operator may enable them
    with caplog.at_level(logging.INFO, logger="pipelex_server.runs.callbacks"), Receiver(fail_first=100, fail_status=500) as receiver:
        url = f"{receiver.url}?token=s3cr3t-callback-token"
        response = await app.client.post(START, json=seed_request(callback_urls=[url], dry_run=True))
        run_id = response.json()["pipeline_run_id"]
        deliveries = await asyncio.to_thread(receiver.wait_for, 2)
        await app.services.runs.deliverer.wait_attempts_recorded(2)
    assert deliveries[0].path == "/hook?token=s3cr3t-callback-token"  # the receiver gets its token
    assert (await app.client.get(f"/api/v1/runs/{run_id}")).json()["callbacks"][0]["url"] == url  # the owner sees it
    assert "s3cr3t" not in caplog.text
    assert f"HTTP Request: POST {receiver.url}?[redacted]" in caplog.text  # the pinned URL: here the same address
    assert f"callback attempt 1 to {receiver.url}?[redacted] for run {run_id} failed: HTTP 500" in caplog.text
    assert f"callback to {receiver.url}?[redacted] for run {run_id} abandoned after 2 attempts: HTTP 500" in caplog.text
