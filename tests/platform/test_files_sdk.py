"""The official SDK (`PipelexAPIClient`, unchanged) against a live server in JWT mode with two callers, on local
storage and on S3 (a real `weed mini`): upload_file, prepare_inputs, execute, download_artifacts and fetch_artifact
through signed links, the file records, a run's files and detail, and isolation between the callers."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from pipelex_sdk.artifact_models import ArtifactScope, DownloadArtifactsOptions, FetchArtifactOptions
from pipelex_sdk.client import PipelexAPIClient
from pipelex_sdk.errors import ApiResponseError
from pipelex_sdk.product_models import FileLinked, FileLinkRefused, FileLinkTarget

from tests.api.test_documents import EXTRACT_ONLY_BUNDLE, data_url, document_input, make_pdf
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

SECRET = "files-sdk-secret-that-is-long-enough-for-hs256"
FILES = {"read.mthds": EXTRACT_ONLY_BUNDLE}
HTTP = FetchArtifactOptions(allow_http=True)  # the test server and weed listen on plain http over loopback


def token(user: str) -> str:
    return jwt.encode({"user_id": user, "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module", params=["local", "s3"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Any:
    env = {"OPENAI_BASE_URL": stub.base_url, "AUTH_MODE": "jwt", "JWT_SECRET_KEY": SECRET}
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = f"files-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(bucket)
        env |= {**s3.env(), "STORAGE_BACKEND": "s3", "S3_BUCKET": bucket, "S3_REGION": "us-east-1"}
    process = ServerProcess(tmp_path_factory.mktemp(f"files-sdk-{request.param}"), env=env).start()
    yield process
    process.stop()


def client_for(server: ServerProcess, user: str) -> PipelexAPIClient:
    return PipelexAPIClient(api_key=token(user), base_url=server.url, request_timeout_seconds=60)


async def test_upload_run_and_download_a_runs_stored_file(server: ServerProcess, tmp_path: Path) -> None:
    pdf = make_pdf(f"signed links {uuid.uuid4().hex[:8]}")
    source = tmp_path / "report.pdf"
    source.write_bytes(pdf)
    async with client_for(server, "ann") as ann:
        record = await ann.upload_file(pdf, filename="upload.pdf", content_type="application/pdf")
        assert record.uri.startswith("pipelex-storage://ann/") and (record.size, record.content_type) == (len(pdf), "application/pdf")
        prepared = await ann.prepare_inputs(files=FILES, inputs={"doc": str(source)})
        assert [upload.filename for upload in prepared.uploads] == ["report.pdf"]
        result = await ann.execute(files=FILES, inputs=prepared.inputs)
        run_id = result.pipeline_run_id

        options = DownloadArtifactsOptions(scope=ArtifactScope.WORKING_MEMORY, allow_http=True)
        verdict = await ann.download_artifacts(dir_path=tmp_path / "out", run_id=run_id, options=options)
        assert verdict.all_saved and verdict.saved_paths, verdict
        assert [Path(path).read_bytes() for path in verdict.saved_paths] == [pdf]
        async with ann.fetch_artifact(prepared.uploads[0].uri, HTTP) as stream:
            assert await stream.read() == pdf

        detail = await ann.get_run_detail(run_id)
        assert detail.status == "COMPLETED" and detail.inputs == prepared.inputs
        files = await ann.list_run_files(run_id)
        assert files.state == "listed" and [entry.uri for entry in files.inputs] == [prepared.uploads[0].uri]
        assert files.inputs[0].file is not None and files.inputs[0].file.name == "report.pdf"

        page = await ann.list_files()
        assert {item.uri for item in page.items} == {record.uri, prepared.uploads[0].uri} and page.next_cursor is None
        file_id = next(item.file_id for item in page.items if item.uri == prepared.uploads[0].uri)
        file = await ann.get_file(file_id)
        assert [use.holder_id for use in file.uses.items] == [run_id]
        renamed = await ann.rename_file(file_id, "Quarterly")
        assert renamed.name == "Quarterly.pdf"
        assert [item.file_id for item in (await ann.get_files_by_uri(renamed.uri)).items] == [file_id]
        links = await ann.link_files([FileLinkTarget(file_id=file_id), FileLinkTarget(uri=record.uri)])
        assert all(isinstance(link, FileLinked) for link in links.items)
        resolved = await ann.resolve_storage_url(record.uri)
        assert resolved.expires_at and resolved.content_type == "application/pdf"

        # a file the run stored itself (its data: URL input, relocated under the run's prefix)
        inline = make_pdf("stored by the run")
        stored_run = (await ann.execute(files=FILES, inputs=document_input(data_url(inline, "application/pdf")))).pipeline_run_id
        verdict = await ann.download_artifacts(dir_path=tmp_path / "stored", run_id=stored_run, options=options)
        assert verdict.all_saved and [Path(path).read_bytes() for path in verdict.saved_paths] == [inline]
        assert verdict.artifacts[0].uri.startswith(f"pipelex-storage://ann/runs/{stored_run}/")
        run_files = await ann.list_run_files(stored_run)
        assert [(entry.mark, entry.uri) for entry in run_files.inputs] == [("input", verdict.artifacts[0].uri)]
        assert (await ann.list_files(run_id=stored_run)).items[0].origin.run_id == stored_run

    async with client_for(server, "bo") as bo:
        with pytest.raises(ApiResponseError) as missing:
            await bo.get_file(file_id)
        assert (missing.value.status, missing.value.problem.code) == (404, "pipelex.storage.not_found")
        with pytest.raises(ApiResponseError) as not_bos:
            await bo.get_run_detail(run_id)
        assert (not_bos.value.status, not_bos.value.problem.code) == (404, "run.not_found")
        [refused] = (await bo.link_files([FileLinkTarget(file_id=file_id)])).items
        assert isinstance(refused, FileLinkRefused) and refused.error.code == "not_found"
        [foreign] = await bo.resolve_artifacts([record.uri])
        assert foreign.error is not None and foreign.error.code == "forbidden"
        assert (await bo.list_files()).items == []


@pytest.mark.temporal
@pytest.mark.postgres
async def test_temporal_mode_on_postgresql_and_s3(stub: Any, postgres_url: str, s3_server: Any, tmp_path: Path) -> None:
    """A run started in Temporal mode and executed by a worker sharing no disk: its history, detail, files and a
    download of the file it stored, through S3 presigned links."""

    from tests.support.temporal import no_shared_disk

    async with no_shared_disk(
        tmp_path,
        s3_server=s3_server,
        postgres_url=postgres_url,
        bucket_prefix="files-t",
        env={"OPENAI_BASE_URL": stub.base_url, "AUTH_MODE": "jwt", "JWT_SECRET_KEY": SECRET},
    ) as (api, _worker):
        user = f"tia-{uuid.uuid4().hex[:8]}"
        async with client_for(api, user) as client:
            pdf = make_pdf("temporal stored")
            started = await client.start(files=FILES, inputs=document_input(data_url(pdf, "application/pdf")))
            run_id = started.pipeline_run_id
            await client.wait_for_result(run_id)
            options = DownloadArtifactsOptions(scope=ArtifactScope.WORKING_MEMORY, allow_http=True)
            verdict = await client.download_artifacts(dir_path=tmp_path / "out", run_id=run_id, options=options)
            assert verdict.all_saved and [Path(path).read_bytes() for path in verdict.saved_paths] == [pdf]
            history = await client.list_runs("mt_none")
            assert history.items == [] and history.next_cursor is None
            detail = await client.get_run_detail(run_id)
            assert detail.status == "COMPLETED" and detail.workflow_id
            run_files = await client.list_run_files(run_id)
            assert run_files.state == "listed" and [entry.uri for entry in run_files.inputs] == [verdict.artifacts[0].uri]
