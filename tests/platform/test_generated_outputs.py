"""A file a run *generates* (not one it was given): a PipeExtract with ``page_views = true`` renders each page of its PDF
to an image the runtime stores under the run (``pipelex-storage://``). Against a live server with the official SDK, on
local storage and on S3 (a real ``weed mini``): right after the run ends (no list first), its files hold the images as
``final`` outputs with working links, ``download_artifacts`` saves them through signed links, and the caller's file
list shows them as generated; another caller gets none of it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pipelex_sdk.artifact_models import DownloadArtifactsOptions
from pipelex_sdk.errors import ApiResponseError

from tests.api.test_documents import data_url, document_input, make_pdf
from tests.platform.test_files_sdk import client_for, server  # noqa: F401 (fixture: local and S3)

pytestmark = pytest.mark.slow

PAGE_VIEWS_BUNDLE = """domain = "pageviews"
main_pipe = "read_pages"

[pipe.read_pages]
type = "PipeExtract"
description = "The text and a rendered image of each page"
inputs = { doc = "Document" }
output = "Page[]"
model = "@default-text-from-pdf"
page_views = true
"""
FILES = {"views.mthds": PAGE_VIEWS_BUNDLE}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def test_a_runs_generated_images_are_final_outputs_downloadable_through_signed_links(server: Any, tmp_path: Path) -> None:  # noqa: F811
    user = f"gen-{uuid.uuid4().hex[:8]}"
    pdf = make_pdf("first page")
    async with client_for(server, user) as client:
        result = await client.execute(files=FILES, inputs=document_input(data_url(pdf, "application/pdf")))
        run_id = result.pipeline_run_id

        # the run's files, read right after it ended: the rendered page is a final output with a link
        run_files = await client.list_run_files(run_id)
        assert run_files.state == "listed"
        assert [entry.mark for entry in run_files.outputs] == ["final"], run_files
        output = run_files.outputs[0]
        assert output.uri.startswith(f"pipelex-storage://{user}/runs/{run_id}/") and output.file is not None
        assert (output.file.kind, output.file.role, output.file.format) == ("generated", "final", "image")
        async with httpx.AsyncClient() as http:
            linked = await http.get(output.file.model_extra["url"])
        assert linked.status_code == 200 and linked.content.startswith(PNG_MAGIC)

        # download_artifacts (the main output's scope, the SDK's default) saves the generated image
        verdict = await client.download_artifacts(
            dir_path=tmp_path / "out", run_id=run_id, options=DownloadArtifactsOptions(allow_http=True)
        )
        assert verdict.all_saved and len(verdict.saved_paths) == 1, verdict
        assert [artifact.uri for artifact in verdict.artifacts] == [output.uri]
        assert Path(verdict.saved_paths[0]).read_bytes() == linked.content

        generated = await client.list_files(run_id=run_id)
        assert [(item.uri, item.kind) for item in generated.items if item.uri == output.uri] == [(output.uri, "generated")]

    async with client_for(server, f"other-{user}") as other:
        with pytest.raises(ApiResponseError) as foreign:
            await other.list_run_files(run_id)
        assert (foreign.value.status, foreign.value.problem.code) == (404, "run.not_found")
        [refused] = await other.resolve_artifacts([output.uri])
        assert refused.error is not None and refused.error.code == "forbidden"
