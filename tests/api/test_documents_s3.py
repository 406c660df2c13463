"""The same document flows with S3-compatible object storage (a real `weed mini`): uploads, data: URLs relocated by
the runtime, outputs too large to inline, and deletion, all through the server's own S3 client."""

from __future__ import annotations

import json
import uuid

import pytest

from pipelex_server.storage.s3 import S3ObjectStore
from tests.api.test_documents import EXTRACT_ONLY_BUNDLE, PDF_BUNDLE, data_url, document_input, make_pdf, prompts_containing
from tests.support.runs import wait_for_end


@pytest.fixture
async def s3_app(make_app, s3_server, monkeypatch):
    bucket = f"app-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("S3_BUCKET", bucket)
    app = await make_app(
        storage_backend="s3", s3_bucket=bucket, s3_endpoint_url=s3_server.endpoint_url, s3_region="us-east-1", output_inline_max_bytes=300
    )
    assert isinstance(app.services.store, S3ObjectStore)
    return app


async def test_upload_run_offloaded_output_and_delete_on_s3(s3_app, stub):
    store = s3_app.services.store
    marker = f"WOMBAT-{uuid.uuid4().hex[:8]}"
    pdf = make_pdf(f"stored in S3 {marker}", *[f"filler line {n} to pass the inline limit" for n in range(10)])
    upload = (await s3_app.client.post("/api/v1/uploads", files={"file": ("s3.pdf", pdf, "application/pdf")})).json()
    key = upload["uri"].removeprefix("pipelex-storage://")
    assert (await store.get(key)).data == pdf

    run_id = f"s3-{uuid.uuid4().hex}"
    body = {"pipeline_run_id": run_id, "mthds_contents": [PDF_BUNDLE], "inputs": document_input(upload["uri"])}
    assert (await s3_app.client.post("/api/v1/pipeline/start", json=body)).status_code == 202
    document = await wait_for_end(s3_app.client, run_id)
    assert document["pipeline_state"] == "COMPLETED", document
    assert prompts_containing(stub, marker)
    assert document["output_url"] == f"/api/v1/runs/{run_id}/output"
    output = await s3_app.client.get(document["output_url"])
    assert output.status_code == 200
    assert "STUB" in json.dumps(output.json())

    caller = (await s3_app.services.runs.repository.get_public("shared", run_id))["caller_id"]
    assert await store.list_keys(f"{caller}/runs/{run_id}")
    assert (await s3_app.client.delete(f"/api/v1/runs/{run_id}")).status_code == 204
    assert await store.list_keys(f"{caller}/runs/{run_id}") == []

    assert (await s3_app.client.delete(f"/api/v1/uploads/{upload['upload_id']}")).status_code == 204
    assert key not in await store.list_keys(f"{caller}/uploads")


async def test_data_url_is_relocated_into_s3(s3_app):
    pdf = make_pdf("relocated")
    run_id = f"s3d-{uuid.uuid4().hex}"
    body = {"pipeline_run_id": run_id, "mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": document_input(data_url(pdf, "application/pdf"))}
    response = await s3_app.client.post("/api/v1/pipeline/execute", json=body)
    assert response.status_code == 200, response.text
    row = await s3_app.services.runs.repository.get_public("shared", run_id)
    stored = row["request"]["inputs"]["doc"]["content"]["url"]
    assert stored.startswith(f"pipelex-storage://{row['caller_id']}/runs/{run_id}/")
    assert (await s3_app.services.store.get(stored.removeprefix("pipelex-storage://"))).data == pdf


async def test_a_bucket_that_does_not_exist_stops_the_boot(make_app, s3_server, monkeypatch):
    from pipelex_server.errors import ConfigurationError

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="object storage"):
        await make_app(storage_backend="s3", s3_bucket="no-such-bucket-here", s3_endpoint_url=s3_server.endpoint_url)
