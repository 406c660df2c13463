"""Deleting a method: 202 at once, 409 `being_deleted` while its erasure runs, its active run cancelled, then every run
of it, its examples and versions gone, and the method gone from the list (live server, official SDK)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pipelex_sdk.errors import ApiResponseError
from pipelex_sdk.product_models import MethodWriteInput

from tests.support.bundles import SEED_TEXT
from tests.support.catalog import SEED_FILES, headers, jwt_env, sdk
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("deletion"), env=jwt_env(stub.base_url)) as running:
        yield running


async def test_a_method_deleted_while_a_run_of_it_is_active_is_erased_with_its_runs(server: ServerProcess, stub: Any) -> None:
    async with sdk(server, "alice") as client:
        method = await client.create_method(MethodWriteInput(name="Doomed", files=SEED_FILES))
        mid = method.method_id
        await client.publish_method(mid, expected_draft_updated_at=method.updated_at)
        done = await client.execute(method_id=mid, inputs={"text": SEED_TEXT})
        await client.create_method_example(mid, name="kept", inputs={"text": SEED_TEXT}, run_id=done.pipeline_run_id)
        stub.configure(latency_ms=60_000)
        active = await client.start(method_id=mid, inputs={"text": "slow"})
        assert await asyncio.to_thread(stub.wait_in_flight, 1, 30), "the provider call never started"

        accepted = await client.delete_method(mid)
        assert accepted.method_id == mid and accepted.deletion_state == "pending" and accepted.deletion_job_id
        for call in (client.delete_method(mid), client.get_method(mid), client.execute(method_id=mid, inputs={"text": "x"})):
            with pytest.raises(ApiResponseError) as refused:
                await call
            assert refused.value.status == 409 and refused.value.problem.code == "pipelex.catalog.being_deleted"

        async def gone() -> None:
            while any(item.method_id == mid for item in (await client.list_methods()).items):
                await asyncio.sleep(0.1)

        await asyncio.wait_for(gone(), timeout=60)
        with pytest.raises(ApiResponseError) as unknown:
            await client.get_method(mid)
        assert unknown.value.status == 404
    stub.reset()

    with httpx.Client(base_url=server.url, headers=headers("alice")) as http:
        for run_id in (done.pipeline_run_id, active.pipeline_run_id):
            assert http.get(f"/api/v1/runs/{run_id}").status_code == 404
