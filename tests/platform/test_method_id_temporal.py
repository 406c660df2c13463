"""`method_id` in Temporal mode: a published version started on the API runs on a worker that shares no disk with it
(PostgreSQL run store, S3 blobs), reading the version's tree back from the caller's blobs; the run records the method
and the version. Then the method's erasure cancels and removes a run the worker holds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from pipelex_sdk.client import PipelexAPIClient
from pipelex_sdk.product_models import MethodWriteInput

from tests.support.bundles import SEED_TEXT
from tests.support.catalog import SEED_FILES

pytestmark = [pytest.mark.slow, pytest.mark.temporal, pytest.mark.postgres]


async def wait_ended(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    for _ in range(1200):
        status = (await http.get(f"/v1/runs/{run_id}/status")).json()
        if status["status"] not in ("PENDING", "RUNNING"):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"the run {run_id} did not end")


async def test_a_published_version_runs_on_a_temporal_worker_and_the_run_records_it(
    stub: Any, postgres_url: str, s3_server: Any, tmp_path: Path
) -> None:
    from tests.support.temporal import no_shared_disk

    async with no_shared_disk(
        tmp_path, s3_server=s3_server, postgres_url=postgres_url, bucket_prefix="catalog", env={"OPENAI_BASE_URL": stub.base_url}
    ) as (api, worker):
        async with PipelexAPIClient(api_key="unused", base_url=api.url, request_timeout_seconds=60) as client:
            method = await client.create_method(MethodWriteInput(name="On a worker", files=SEED_FILES))
            await client.publish_method(method.method_id, expected_draft_updated_at=method.updated_at)
            started = await client.start(method_id=method.method_id, inputs={"text": SEED_TEXT})
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
            status = await wait_ended(http, started.pipeline_run_id)
            assert status["status"] == "COMPLETED", (status, worker.log()[-3000:])
            run = (await http.get(f"/api/v1/runs/{started.pipeline_run_id}")).json()
            assert (run["method_id"], run["method_version"]) == (method.method_id, "1")

            stub.configure(latency_ms=60_000)
            slow = (await http.post("/v1/start", json={"method_id": method.method_id, "inputs": {"text": "slow"}})).json()
            assert await asyncio.to_thread(stub.wait_in_flight, 1, 60), worker.log()[-3000:]
            assert (await http.delete(f"/v1/methods/{method.method_id}")).status_code == 202
            for _ in range(1200):
                if (await http.get(f"/v1/methods/{method.method_id}")).status_code == 404:
                    break
                await asyncio.sleep(0.05)
            assert (await http.get(f"/api/v1/runs/{slow['pipeline_run_id']}")).status_code == 404
            assert (await http.get(f"/api/v1/runs/{started.pipeline_run_id}")).status_code == 404
            stub.reset()
