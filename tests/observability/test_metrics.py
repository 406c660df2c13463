"""GET /metrics scraped with the Prometheus parser before and after real runs: each family moves by exactly what was done."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from pipelex_server.fetch import Fetcher, FetchRefused
from pipelex_server.netguard import Resolver
from tests.observability.scrape import moved, samples, total
from tests.support.bundles import SEQUENCE_BUNDLE, seed_request
from tests.support.fileserver import FileServer
from tests.support.receiver import Receiver
from tests.support.runs import wait_for_end

EXECUTE = "/api/v1/pipeline/execute"
START = "/api/v1/pipeline/start"


async def scrape(client: httpx.AsyncClient) -> dict:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_runs_move_the_run_pipe_llm_and_http_families_by_exactly_the_runs_made(client, stub):
    before = await scrape(client)
    documents = [(await client.post(EXECUTE, json=seed_request())).json() for _ in range(3)]
    started = [(await client.post(START, json=seed_request())).json()["pipeline_run_id"] for _ in range(2)]
    documents += [await wait_for_end(client, run_id) for run_id in started]
    after = await scrape(client)

    assert all(document["pipeline_state"] == "COMPLETED" for document in documents)
    assert moved(before, after, "pipelex_server_runs_started_total", pipe_code="summarize") == 5
    assert moved(before, after, "pipelex_server_runs_finished_total", pipe_code="summarize", state="COMPLETED") == 5
    assert moved(before, after, "pipelex_server_run_duration_seconds_count", state="COMPLETED") == 5
    assert moved(before, after, "pipelex_server_pipe_duration_seconds_count", pipe_type="PipeLLM", outcome="succeeded") == 5
    # every inference call, with the tokens and cost the run documents report
    assert moved(before, after, "pipelex_server_llm_calls_total") == 5 == stub.stats()["total_calls"]
    for direction in ("input", "output"):
        expected = sum(document["usage"]["tokens"][direction] for document in documents)
        assert moved(before, after, "pipelex_server_llm_tokens_total", direction=direction) == expected
    cost = sum(document["usage"]["cost_usd"] for document in documents)
    assert moved(before, after, "pipelex_server_llm_cost_usd_total") == pytest.approx(cost)
    # HTTP: route templates, never raw paths or run ids
    assert moved(before, after, "pipelex_server_http_requests_total", method="POST", route=EXECUTE, status="200") == 3
    assert moved(before, after, "pipelex_server_http_request_duration_seconds_count", method="POST", route=EXECUTE) == 3
    assert moved(before, after, "pipelex_server_http_requests_total", method="GET", route="/api/v1/runs/{run_id}", status="200") == 2
    labels = {value for (_, sample_labels) in after for _, value in sample_labels}
    assert not any(document["pipeline_run_id"] in label for document in documents for label in labels)
    # nothing left queued or running in this store
    assert total(after, "pipelex_server_runs_queued") == 0
    assert total(after, "pipelex_server_runs_running") == 0
    assert total(after, "pipelex_server_runs_executing") == 0


async def test_each_pipe_of_a_sequence_is_timed_by_its_type(client):
    before = await scrape(client)
    inputs = {"note": {"concept": "KitchenNote", "content": "leeks and potatoes"}}
    response = await client.post(EXECUTE, json={"mthds_contents": [SEQUENCE_BUNDLE], "inputs": inputs})
    assert response.status_code == 200, response.text
    after = await scrape(client)
    assert moved(before, after, "pipelex_server_pipe_duration_seconds_count", pipe_type="PipeSequence", outcome="succeeded") == 1
    assert moved(before, after, "pipelex_server_pipe_duration_seconds_count", pipe_type="PipeLLM", outcome="succeeded") == 3


async def test_failed_and_cancelled_runs_are_counted_by_their_state(client, stub):
    before = await scrape(client)
    stub.configure(fail={"status": 500, "count": None})
    failed = await client.post(EXECUTE, json=seed_request())
    assert failed.status_code == 502, failed.text
    stub.configure(fail=None, latency_ms=30_000)
    run_id = (await client.post(START, json=seed_request())).json()["pipeline_run_id"]
    assert await asyncio.to_thread(stub.wait_in_flight, 1, 30)
    assert (await client.post(f"/api/v1/runs/{run_id}/cancel")).status_code == 202
    assert (await wait_for_end(client, run_id))["pipeline_state"] == "CANCELLED"
    after = await scrape(client)
    assert moved(before, after, "pipelex_server_runs_started_total") == 2
    assert moved(before, after, "pipelex_server_runs_finished_total", state="FAILED") == 1
    assert moved(before, after, "pipelex_server_runs_finished_total", state="CANCELLED") == 1
    assert moved(before, after, "pipelex_server_runs_finished_total") == 2
    assert moved(before, after, "pipelex_server_pipe_duration_seconds_count", outcome="failed") >= 1


async def test_an_unknown_path_is_counted_as_unmatched_not_by_its_path(client):
    before = await scrape(client)
    assert (await client.get("/no/such/path-xyz123")).status_code == 404
    after = await scrape(client)
    assert moved(before, after, "pipelex_server_http_requests_total", route="unmatched", status="404") == 1
    assert "path-xyz123" not in (await client.get("/metrics")).text


async def test_url_fetches_are_counted_by_outcome(client):
    fetcher = Fetcher(
        allow_private=False,
        max_bytes=1024,
        timeout_seconds=5,
        max_concurrency=2,
        max_request_bytes=4096,
        resolver=Resolver(timeout_seconds=2),
    )
    allowed = Fetcher(
        allow_private=True,
        max_bytes=1024,
        timeout_seconds=5,
        max_concurrency=2,
        max_request_bytes=4096,
        resolver=Resolver(timeout_seconds=2),
    )
    before = await scrape(client)
    with FileServer() as files:
        files.add("/ok.txt", b"hello", "text/plain")
        files.add("/missing.txt", b"no", "text/plain", status=404)
        try:
            await allowed.fetch(files.url("/ok.txt"))
            with pytest.raises(FetchRefused):
                await allowed.fetch(files.url("/missing.txt"))
            with pytest.raises(FetchRefused):
                await fetcher.fetch(files.url("/ok.txt"))  # loopback: refused by the SSRF guard
        finally:
            await fetcher.aclose()
            await allowed.aclose()
    after = await scrape(client)
    assert moved(before, after, "pipelex_server_url_fetches_total", outcome="ok") == 1
    assert moved(before, after, "pipelex_server_url_fetches_total", outcome="http_status") == 1
    assert moved(before, after, "pipelex_server_url_fetches_total", outcome="url_refused") == 1


async def test_callback_attempts_are_counted_by_outcome(make_app):
    app = await make_app(
        completion_callback_secret="callback-secret-for-tests",
        callback_allow_private_hosts=True,
        callback_backoff_seconds=0.05,
        callback_max_attempts=4,
    )
    before = await scrape(app.client)
    with Receiver(fail_first=2) as receiver:
        await app.client.post(START, json=seed_request(callback_urls=[receiver.url], dry_run=True))
        await asyncio.to_thread(receiver.wait_for, 3)
        await app.services.runs.deliverer.wait_attempts_recorded(3)
    after = await scrape(app.client)
    assert moved(before, after, "pipelex_server_callback_attempts_total", outcome="http_5xx") == 2
    assert moved(before, after, "pipelex_server_callback_attempts_total", outcome="delivered") == 1


async def test_inference_calls_are_labelled_by_provider_and_model(client):
    before = await scrape(client)
    body = (await client.post(EXECUTE, json=seed_request())).json()
    after = await scrape(client)
    (record,) = body["usage"]["by_pipe"]
    model = record["inference_model_name"]
    assert moved(before, after, "pipelex_server_llm_calls_total", provider="openai", model=model) == 1


def test_the_worker_endpoint_serves_the_registry_and_refuses_a_taken_port():
    from pipelex_server.errors import ConfigurationError
    from pipelex_server.observability import metrics
    from tests.support.server import free_port

    port = free_port()
    stop = metrics.serve_http("127.0.0.1", port)
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert response.status_code == 200
        assert "pipelex_server_runs_started_total" in response.text or "pipelex_server_runs_started" in response.text
        with pytest.raises(ConfigurationError, match="METRICS_PORT"):
            metrics.serve_http("127.0.0.1", port)
    finally:
        stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)


def test_the_multiprocess_directory_is_made_for_several_workers_and_an_operators_one_is_emptied(monkeypatch, tmp_path):
    from pipelex_server.observability import metrics

    monkeypatch.setenv(metrics.MULTIPROC_ENV, "recorded")  # so that the undo removes what the function sets
    monkeypatch.delenv(metrics.MULTIPROC_ENV)
    assert metrics.prepare_multiprocess(1) is None
    made = metrics.prepare_multiprocess(2)
    assert made is not None and Path(made).is_dir() and os.environ[metrics.MULTIPROC_ENV] == made
    own = tmp_path / "metrics"
    own.mkdir()
    (own / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(own))
    assert metrics.prepare_multiprocess(1) == str(own)
    assert list(own.iterdir()) == []
