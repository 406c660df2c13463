"""docs/platform.md's SDK walkthrough, run as written, in Temporal mode: the API on PostgreSQL and S3 (a real
``weed mini``), the run executed by a worker that shares no disk with it. create_method -> publish ->
execute(method_id=...) -> download_artifacts through S3 presigned links; then a file the worker *generates* (a page
rendered by ``PipeExtract`` with ``page_views``) recorded as the run's final output and downloaded the same way."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from pipelex_sdk.artifact_models import DownloadArtifactsOptions

from tests.api.test_documents import data_url, document_input
from tests.platform.test_generated_outputs import PAGE_VIEWS_BUNDLE, PNG_MAGIC
from tests.platform.test_walkthrough import block_after, run, workdir  # noqa: F401 (fixture)
from tests.support.catalog import jwt_env, sdk, token

pytestmark = [pytest.mark.slow, pytest.mark.temporal, pytest.mark.postgres]


async def test_the_sdk_walkthrough_runs_on_a_temporal_worker(
    stub: Any,
    postgres_url: str,
    s3_server: Any,
    tmp_path: Path,
    workdir: tuple[Path, bytes],  # noqa: F811
) -> None:
    from tests.support.temporal import no_shared_disk

    cwd, pdf = workdir
    async with no_shared_disk(
        tmp_path, s3_server=s3_server, postgres_url=postgres_url, bucket_prefix="walk", env=jwt_env(stub.base_url)
    ) as (api, worker):
        user = f"walker-{uuid.uuid4().hex[:8]}"
        out = await asyncio.to_thread(
            run,
            [sys.executable, "-c", block_after("walkthrough:sdk", "python")],
            cwd=cwd,
            env={"PIPELEX_API_KEY": token(user), "PIPELEX_BASE_URL": api.url},
        )
        method_id, version, run_id, *saved = out.split()
        assert method_id.startswith("mt_") and version == "1"
        assert [Path(path).read_bytes() for path in saved] == [pdf]
        async with sdk(api, user) as client:
            detail = await client.get_run_detail(run_id)
            assert (detail.status, detail.method_id, detail.method_version) == ("COMPLETED", method_id, 1)
            assert detail.workflow_id, worker.log()[-3000:]
            history = await client.list_runs(method_id)
            assert [item.pipeline_run_id for item in history.items] == [run_id]

            rendered = await client.execute(
                files={"views.mthds": PAGE_VIEWS_BUNDLE}, inputs=document_input(data_url(pdf, "application/pdf"))
            )
            run_files = await client.list_run_files(rendered.pipeline_run_id)
            assert [(entry.mark, entry.file.kind if entry.file else None) for entry in run_files.outputs] == [("final", "generated")]
            options = DownloadArtifactsOptions(allow_http=True)
            verdict = await client.download_artifacts(dir_path=tmp_path / "pages", run_id=rendered.pipeline_run_id, options=options)
            assert verdict.all_saved and [artifact.uri for artifact in verdict.artifacts] == [run_files.outputs[0].uri]
            assert Path(verdict.saved_paths[0]).read_bytes().startswith(PNG_MAGIC)
