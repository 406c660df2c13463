"""Temporal mode keeps runs through crashes and restarts: a worker killed with kill -9 mid-run, the API process
restarted with runs in flight, and two workers sharing a batch of runs. Real processes, real Temporal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conformance.conftest import Deployment, start_deployment
from tests.support.bundles import SEED_BUNDLE
from tests.support.runs import parse_sse, wait_for_end

pytestmark = [pytest.mark.slow, pytest.mark.temporal, pytest.mark.postgres]

THREE_STEPS = """domain = "durable"
main_pipe = "three_steps"

[pipe.three_steps]
type = "PipeSequence"
description = "Three steps, each its own model call"
inputs = { text = "Text" }
output = "Text"
steps = [
  { pipe = "step_one", result = "one" },
  { pipe = "step_two", result = "two" },
  { pipe = "step_three", result = "three" },
]

[pipe.step_one]
type = "PipeLLM"
description = "First"
inputs = { text = "Text" }
output = "Text"
prompt = "STEP-ONE $text"

[pipe.step_two]
type = "PipeLLM"
description = "Second"
inputs = { text = "Text", one = "Text" }
output = "Text"
prompt = "STEP-TWO $text $one"

[pipe.step_three]
type = "PipeLLM"
description = "Third"
inputs = { text = "Text", two = "Text" }
output = "Text"
prompt = "STEP-THREE $text $two"
"""


@pytest.fixture(scope="module")
def durable(stub, temporal_server, postgres_url, s3_server, tmp_path_factory) -> Iterator[Deployment]:
    """The several-hosts configuration: PostgreSQL run store, S3 object storage, each process its own DATA_DIR; 8 runs at
    most per worker, so a batch of runs cannot all fit on one."""
    bucket = f"durable-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    extra = {
        **s3_server.env(),
        "S3_BUCKET": bucket,
        "DATABASE_URL": postgres_url,
        "OUTPUT_INLINE_MAX_BYTES": "2000",
        "MAX_CONCURRENT_RUNS": "8",
    }
    deployment = start_deployment("temporal", stub, tmp_path_factory.mktemp("durable"), temporal_server, extra)
    yield deployment
    deployment.stop()


def calls_with(stub, text: str) -> int:
    return sum(count for prompt, count in stub.stats()["by_prompt"].items() if text in prompt)


def calls_starting(stub, text: str) -> int:
    """Calls whose prompt starts with ``text`` (a step's prompt quotes the previous step's answer, which echoes its prompt)."""
    return sum(count for prompt, count in stub.stats()["by_prompt"].items() if prompt.startswith(text))


async def test_a_worker_killed_mid_run_does_not_lose_the_run_nor_redo_finished_steps(durable, stub):
    marker = uuid.uuid4().hex
    stub.configure(timeout={"seconds": 120, "match": f"STEP-TWO {marker}", "count": 1})
    run_id = f"durable-{marker}"
    async with httpx.AsyncClient(base_url=durable.url, timeout=120) as api:
        response = await api.post(
            "/api/v1/pipeline/start", json={"pipeline_run_id": run_id, "mthds_contents": [THREE_STEPS], "inputs": {"text": marker}}
        )
        assert response.status_code == 202, response.text
        # step one answered, step two is at the model: kill the worker there
        assert await asyncio.to_thread(stub.wait_in_flight, 1, 60)
        assert calls_starting(stub, f"STEP-ONE {marker}") == 1
        victim = durable.workers.pop(0)
        victim.kill()
        assert (await api.get(f"/api/v1/runs/{run_id}")).json()["pipeline_state"] == "RUNNING"

        durable.add_worker()
        document = await wait_for_end(api, run_id)
        assert document["pipeline_state"] == "COMPLETED", document
        assert calls_starting(stub, f"STEP-ONE {marker}") == 1  # checkpointed: not executed again
        assert calls_starting(stub, f"STEP-THREE {marker}") == 1
        events = parse_sse((await api.get(f"/api/v1/runs/{run_id}/events")).text)
        attempts = [event["data"].get("attempt") for event in events if event["data"].get("pipeline_state") == "RUNNING"]
        assert attempts[0] == 1 and attempts[-1] >= 2, attempts
        restored = [event["data"]["pipe_code"] for event in events if event["event"] == "pipe_finished" and event["data"].get("restored")]
        assert restored == ["step_one"]


async def test_the_api_restarted_with_runs_in_flight_reports_them_correctly(durable, stub):
    stub.configure(latency_ms=1500)
    run_ids = [f"restart-{uuid.uuid4().hex}" for _ in range(5)]
    async with httpx.AsyncClient(base_url=durable.url, timeout=60) as api:
        for run_id in run_ids:
            body = {"pipeline_run_id": run_id, "mthds_contents": [SEED_BUNDLE], "inputs": {"text": run_id}}
            assert (await api.post("/api/v1/pipeline/start", json=body)).status_code == 202
    durable.restart_api()
    async with httpx.AsyncClient(base_url=durable.url, timeout=60) as api:
        documents = await asyncio.gather(*(wait_for_end(api, run_id) for run_id in run_ids))
    assert [document["pipeline_state"] for document in documents] == ["COMPLETED"] * 5
    assert all(calls_with(stub, run_id) == 1 for run_id in run_ids)


async def test_two_workers_share_a_hundred_runs(durable, stub):
    while len(durable.workers) < 2:
        durable.add_worker()
    stub.configure(latency_ms=200)
    batch = uuid.uuid4().hex[:8]
    run_ids = [f"share-{batch}-{index:03d}" for index in range(100)]
    limit = asyncio.Semaphore(20)
    async with httpx.AsyncClient(base_url=durable.url, timeout=120) as api:

        async def start(run_id: str) -> None:
            async with limit:
                body = {"pipeline_run_id": run_id, "mthds_contents": [SEED_BUNDLE], "inputs": {"text": run_id}}
                response = await api.post("/api/v1/pipeline/start", json=body)
                assert response.status_code == 202, response.text

        await asyncio.gather(*(start(run_id) for run_id in run_ids))

        async def end(run_id: str) -> tuple[str, str | None]:
            async with limit:
                events = parse_sse((await api.get(f"/api/v1/runs/{run_id}/events")).text)
                worker = next(event["data"].get("worker") for event in events if event["data"].get("pipeline_state") == "RUNNING")
                return events[-1]["data"]["pipeline_state"], worker

        outcomes = await asyncio.gather(*(end(run_id) for run_id in run_ids))
    assert [state for state, _worker in outcomes] == ["COMPLETED"] * 100
    workers = {worker for _state, worker in outcomes}
    assert len(workers) == 2, workers
    assert all(calls_with(stub, run_id) == 1 for run_id in run_ids)


async def test_an_upload_read_by_a_worker_and_a_large_output_served_by_the_api(durable, stub):
    """The API stores the upload in S3, a worker (another process, another data directory) reads it and stores the
    large output in S3, and the API serves it."""
    from tests.api.test_documents import EXTRACT_ONLY_BUNDLE, document_input, make_pdf

    marker = f"PANDA-{uuid.uuid4().hex[:8]}"
    pdf = make_pdf(marker, *[f"line {index} of a page long enough to pass the inline limit of the run document" for index in range(40)])
    async with httpx.AsyncClient(base_url=durable.url, timeout=60) as api:
        upload = (await api.post("/api/v1/uploads", files={"file": ("big.pdf", pdf, "application/pdf")})).json()
        run_id = f"upload-{uuid.uuid4().hex}"
        body = {"pipeline_run_id": run_id, "mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": document_input(upload["uri"])}
        assert (await api.post("/api/v1/pipeline/start", json=body)).status_code == 202
        document = await wait_for_end(api, run_id)
        assert document["pipeline_state"] == "COMPLETED", document
        assert document["pipe_output"] is None
        output = await api.get(document["output_url"])
        assert output.status_code == 200
        assert marker in output.text
