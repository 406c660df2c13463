"""Documents and images as inputs: data: URLs, uploads, remote URLs the server fetches itself, and what stays
scoped to its caller. The PDF pipeline runs the runtime's real PDF extraction (pypdfium2) and the stub LLM."""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path

import pytest

from tests.support.fileserver import FileServer
from tests.support.runs import wait_for_end

PDF_BUNDLE = '''domain = "pdfdocs"
main_pipe = "summarize_pdf"

[pipe.summarize_pdf]
type = "PipeSequence"
description = "Read a PDF's pages, then summarize them"
inputs = { doc = "Document" }
output = "Text"
steps = [
  { pipe = "read_pages", result = "pages" },
  { pipe = "summarize", result = "summary" },
]

[pipe.read_pages]
type = "PipeExtract"
description = "The text of each page"
inputs = { doc = "Document" }
output = "Page[]"
model = "@default-text-from-pdf"

[pipe.summarize]
type = "PipeLLM"
description = "Summarize the pages"
inputs = { pages = "Page[]" }
output = "Text"
prompt = """
Summarize these pages:
@pages
"""
'''

EXTRACT_ONLY_BUNDLE = """domain = "pdfread"
main_pipe = "read_pages"

[pipe.read_pages]
type = "PipeExtract"
description = "The text of each page"
inputs = { doc = "Document" }
output = "Page[]"
model = "@default-text-from-pdf"
"""

IMAGE_BUNDLE = '''domain = "pictures"
main_pipe = "describe"

[pipe.describe]
type = "PipeLLM"
description = "Describe a picture"
inputs = { picture = "Image" }
output = "Text"
prompt = """
Describe this picture:
$picture
"""
'''

# A 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def make_pdf(*lines: str) -> bytes:
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer)
    for index, line in enumerate(lines):
        page.drawString(72, 720 - 18 * index, line)
    page.showPage()
    page.save()
    return buffer.getvalue()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def document_input(url: str, **extra: str) -> dict:
    return {"doc": {"concept": "Document", "content": {"url": url, **extra}}}


def prompts_containing(stub, marker: str) -> list[str]:
    return [call["prompt"] for call in stub.stats()["recent"] if marker in call["prompt"]]


def stored_files(root: Path) -> set[Path]:
    """The objects under a local store's root (not the content-type sidecars, whose names hold a '~')."""
    return {path for path in root.rglob("*") if path.is_file() and "~" not in path.name} if root.exists() else set()


def storage_root(handle) -> Path:
    return handle.services.settings.data_dir / "storage"


@pytest.fixture(scope="module")
def files():
    with FileServer() as server:
        yield server


@pytest.fixture
async def fetching_app(make_app):
    """An app allowed to fetch from loopback (the test file server): FETCH_ALLOW_PRIVATE_HOSTS=true."""
    return await make_app(fetch_allow_private_hosts=True, fetch_max_mib=1, fetch_timeout_seconds=1)


# ---------------------------------------------------------------- the PDF pipeline, end to end


async def test_pdf_as_data_url_runs_extraction_then_the_llm(client, stub):
    marker = f"ZEBRA-{uuid.uuid4().hex[:8]}"
    pdf = make_pdf("Quarterly report", f"The code word is {marker}.")
    body = {"mthds_contents": [PDF_BUNDLE], "inputs": document_input(data_url(pdf, "application/pdf"))}
    response = await client.post("/api/v1/pipeline/execute", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["pipeline_state"] == "COMPLETED"
    stuff = answer["pipe_output"]["working_memory"]["root"][answer["main_stuff_name"]]
    assert "Text" in json.dumps(stuff["concept"])
    # the PDF's text reached the model: it was extracted by the runtime from the bytes we sent
    assert prompts_containing(stub, marker), "the extracted text did not reach the LLM"
    assert "file://" not in response.text


async def test_pdf_extraction_output_holds_the_pages_text(client):
    marker = f"OKAPI-{uuid.uuid4().hex[:8]}"
    pdf = make_pdf(f"first line {marker}")
    body = {"mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": document_input(data_url(pdf, "application/pdf"))}
    response = await client.post("/api/v1/pipeline/execute", json=body)
    assert response.status_code == 200, response.text
    assert marker in json.dumps(response.json()["pipe_output"])


async def test_pdf_as_upload_runs_end_to_end(client, stub, session_app):
    marker = f"LLAMA-{uuid.uuid4().hex[:8]}"
    pdf = make_pdf(f"Uploaded {marker}")
    uploaded = await client.post("/api/v1/uploads", files={"file": ("report.pdf", pdf, "application/pdf")})
    assert uploaded.status_code == 201, uploaded.text
    upload = uploaded.json()
    assert upload["uri"].startswith("pipelex-storage://")
    assert upload["content_type"] == "application/pdf"
    assert upload["size_bytes"] == len(pdf)
    assert upload["filename"] == "report.pdf"
    assert uploaded.headers["location"] == f"/api/v1/uploads/{upload['upload_id']}"

    response = await client.post("/api/v1/pipeline/execute", json={"mthds_contents": [PDF_BUNDLE], "inputs": document_input(upload["uri"])})
    assert response.status_code == 200, response.text
    assert prompts_containing(stub, marker)
    assert str(session_app.services.settings.data_dir) not in response.text


async def test_data_url_input_is_stored_under_the_run_and_the_stored_request_is_small(client, session_app):
    pdf = make_pdf("x" * 50, *[f"line {n}" for n in range(30)])
    url = data_url(pdf, "application/pdf")
    run_id = f"doc-{uuid.uuid4().hex}"
    body = {"pipeline_run_id": run_id, "mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": document_input(url)}
    response = await client.post("/api/v1/pipeline/start", json=body)
    assert response.status_code == 202, response.text
    document = await wait_for_end(client, run_id)
    assert document["pipeline_state"] == "COMPLETED", document
    row = await session_app.services.runs.repository.get_public("shared", run_id)
    stored_url = row["request"]["inputs"]["doc"]["content"]["url"]
    assert stored_url.startswith(f"pipelex-storage://{row['caller_id']}/runs/{run_id}/"), stored_url
    run_dir = storage_root(session_app) / row["caller_id"] / "runs" / run_id
    assert any(path.read_bytes() == pdf for path in stored_files(run_dir))

    # the same body again is the same run (idempotent), even though the stored request was rewritten
    again = await client.post("/api/v1/pipeline/start", json=body)
    assert again.status_code == 202, again.text
    assert again.json()["pipeline_run_id"] == run_id

    # deleting the run deletes what it stored
    deleted = await client.delete(f"/api/v1/runs/{run_id}")
    assert deleted.status_code == 204
    assert not stored_files(run_dir)


async def test_image_data_url_reaches_the_model(client, stub):
    body = {"mthds_contents": [IMAGE_BUNDLE], "inputs": {"picture": {"concept": "Image", "content": {"url": data_url(PNG, "image/png")}}}}
    response = await client.post("/api/v1/pipeline/execute", json=body)
    assert response.status_code == 200, response.text
    assert stub.stats()["total_calls"] == 1


async def test_a_document_that_is_not_an_image_is_refused_as_an_image(client, stub):
    pdf = make_pdf("not a picture")
    body = {
        "mthds_contents": [IMAGE_BUNDLE],
        "inputs": {"picture": {"concept": "Image", "content": {"url": data_url(pdf, "application/pdf")}}},
    }
    response = await client.post("/api/v1/pipeline/execute", json=body)
    assert response.status_code == 422, response.text
    assert stub.stats()["total_calls"] == 0


async def test_invalid_base64_data_url_is_a_422(client, stub):
    body = {"mthds_contents": [PDF_BUNDLE], "inputs": document_input("data:application/pdf;base64,@@@not-base64@@@")}
    response = await client.post("/api/v1/pipeline/execute", json=body)
    assert response.status_code == 422, response.text
    assert stub.stats()["total_calls"] == 0


# ---------------------------------------------------------------- uploads


async def test_upload_lifecycle_get_list_delete(client, session_app):
    uploaded = (await client.post("/api/v1/uploads", files={"file": ("notes.txt", b"hello world", "text/plain")})).json()
    assert uploaded["content_type"] == "text/plain"
    fetched = await client.get(f"/api/v1/uploads/{uploaded['upload_id']}")
    assert fetched.status_code == 200
    assert fetched.json() == uploaded
    listed = (await client.get("/api/v1/uploads", params={"limit": 200})).json()
    assert uploaded["upload_id"] in [item["upload_id"] for item in listed["uploads"]]
    key = uploaded["uri"].removeprefix("pipelex-storage://")
    assert (storage_root(session_app) / key).read_bytes() == b"hello world"

    deleted = await client.delete(f"/api/v1/uploads/{uploaded['upload_id']}")
    assert deleted.status_code == 204
    assert not (storage_root(session_app) / key).exists()
    assert (await client.get(f"/api/v1/uploads/{uploaded['upload_id']}")).status_code == 404
    again = await client.delete(f"/api/v1/uploads/{uploaded['upload_id']}")
    assert again.status_code == 404
    assert again.json()["code"] == "upload.not_found"

    # a deleted upload's URI no longer works as an input
    response = await client.post(
        "/api/v1/pipeline/execute", json={"mthds_contents": [PDF_BUNDLE], "inputs": document_input(uploaded["uri"])}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "input.reference_not_found"


@pytest.mark.parametrize(
    ("name", "declared", "expected"),
    [
        ("notes.md", "application/octet-stream", "text/markdown"),
        ("notes.txt", None, "text/plain"),
        ("data.csv", "text/csv; charset=utf-8", "text/csv"),
        ("no-extension", "application/octet-stream", "application/octet-stream"),
        ("scan.pdf", "text/plain", "application/pdf"),  # the bytes win over a wrong declaration
    ],
)
async def test_upload_content_type_from_bytes_then_declaration_then_extension(client, name, declared, expected):
    data = make_pdf("typed") if name.endswith(".pdf") else b"plain text, no magic number"
    part = (name, data, declared) if declared else (name, data)
    upload = (await client.post("/api/v1/uploads", files={"file": part})).json()
    assert upload["content_type"] == expected, upload
    await client.delete(f"/api/v1/uploads/{upload['upload_id']}")


@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\..\\boot.ini", "/abs/path/evil.pdf", "a b\x01c.pdf", "...."])
async def test_upload_names_never_become_paths(client, session_app, name):
    root = storage_root(session_app)
    before = stored_files(root)
    response = await client.post("/api/v1/uploads", files={"file": (name, b"%PDF-1.4 tiny", "application/pdf")})
    assert response.status_code == 201, response.text
    upload = response.json()
    new = stored_files(root) - before
    assert len(new) == 1
    (path,) = new
    assert path.resolve().is_relative_to(root.resolve())
    assert path.name.startswith(upload["upload_id"])
    filename = upload["filename"]
    assert filename is None or ("/" not in filename and "\\" not in filename and not filename.startswith("."))
    await client.delete(f"/api/v1/uploads/{upload['upload_id']}")


async def test_upload_over_the_limit_is_a_413_and_stores_nothing(make_app):
    app = await make_app(upload_max_mib=0.25)
    root = storage_root(app)
    before = stored_files(root)
    response = await app.client.post("/api/v1/uploads", files={"file": ("big.bin", b"\0" * (300 * 1024), "application/octet-stream")})
    assert response.status_code == 413
    assert response.json()["code"] == "request.too_large"
    assert "UPLOAD_MAX_MIB" in response.json()["detail"]
    assert stored_files(root) == before
    # the normal JSON limit does not apply to uploads: a 200 KiB upload is fine with a 0.25 MiB limit
    ok = await app.client.post("/api/v1/uploads", files={"file": ("ok.bin", b"\1" * (200 * 1024), "application/octet-stream")})
    assert ok.status_code == 201, ok.text


async def test_upload_without_a_file_part_is_a_422(client):
    response = await client.post("/api/v1/uploads", data={"not_file": "x"})
    assert response.status_code == 422
    empty = await client.post("/api/v1/uploads", files={"file": ("empty.pdf", b"", "application/pdf")})
    assert empty.status_code == 422
    assert empty.json()["code"] == "upload.missing_file"


async def test_another_callers_upload_is_refused(make_app, stub):
    app = await make_app(trust_forwarded_identity_headers=True)
    pdf = make_pdf("alice's secret")
    alice = {"X-User-Id": "alice"}
    bob = {"X-User-Id": "bob"}
    upload = (await app.client.post("/api/v1/uploads", files={"file": ("a.pdf", pdf, "application/pdf")}, headers=alice)).json()
    assert upload["uri"].startswith("pipelex-storage://alice/")

    # bob can neither see, delete, nor use alice's upload
    assert (await app.client.get(f"/api/v1/uploads/{upload['upload_id']}", headers=bob)).status_code == 404
    assert (await app.client.delete(f"/api/v1/uploads/{upload['upload_id']}", headers=bob)).status_code == 404
    assert upload["upload_id"] not in json.dumps((await app.client.get("/api/v1/uploads", headers=bob)).json())
    body = {"mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": document_input(upload["uri"])}
    refused = await app.client.post("/api/v1/pipeline/execute", json=body, headers=bob)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "security.input_url_refused"
    assert "alice's secret" not in refused.text
    refused_start = await app.client.post("/api/v1/pipeline/start", json=body, headers=bob)
    assert refused_start.status_code == 422

    # alice can
    allowed = await app.client.post("/api/v1/pipeline/execute", json=body, headers=alice)
    assert allowed.status_code == 200, allowed.text
    assert "alice" in json.dumps(allowed.json()["pipe_output"])


# ---------------------------------------------------------------- remote URLs, fetched by the server


async def test_remote_pdf_is_fetched_once_by_the_server_and_stored(fetching_app, files, stub):
    marker = f"IBEX-{uuid.uuid4().hex[:8]}"
    path = f"/remote-{uuid.uuid4().hex}.pdf"
    pdf = make_pdf(f"remote {marker}")
    files.add(path, pdf, "application/pdf")
    run_id = f"remote-{uuid.uuid4().hex}"
    body = {"pipeline_run_id": run_id, "mthds_contents": [PDF_BUNDLE], "inputs": document_input(files.url(path))}
    response = await fetching_app.client.post("/api/v1/pipeline/start", json=body)
    assert response.status_code == 202, response.text
    document = await wait_for_end(fetching_app.client, run_id)
    assert document["pipeline_state"] == "COMPLETED", document
    assert prompts_containing(stub, marker)
    # fetched once, at /start (the check); the run used the stored copy
    assert files.hits(path) == 1
    row = await fetching_app.services.runs.repository.get_public("shared", run_id)
    assert row["request"]["inputs"]["doc"]["content"]["url"].startswith("pipelex-storage://")
    # a retried /start (same id, same body) is answered from its run: the URL is not fetched again
    again = await fetching_app.client.post("/api/v1/pipeline/start", json=body)
    assert again.status_code == 202, again.text
    assert again.json()["pipeline_run_id"] == run_id
    assert files.hits(path) == 1


async def test_remote_image_with_a_redirect(fetching_app, files, stub):
    target = f"/img-{uuid.uuid4().hex}.png"
    files.add(target, PNG, "image/png")
    files.redirect("/go-image", files.url(target))
    body = {"mthds_contents": [IMAGE_BUNDLE], "inputs": {"picture": {"concept": "Image", "content": {"url": files.url("/go-image")}}}}
    response = await fetching_app.client.post("/api/v1/pipeline/execute", json=body)
    assert response.status_code == 200, response.text
    assert files.hits(target) == 1


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("redirect_to_metadata", "security.input_url_refused"),
        ("redirect_to_file", "security.input_url_refused"),
        ("too_large", "input.too_large"),
        ("html_instead_of_pdf", "input.file_type_unsupported"),
        ("slow", "input.url_unreachable"),
        ("missing", "input.url_unreachable"),
    ],
)
async def test_hostile_or_broken_urls_are_a_422_naming_the_input(fetching_app, files, stub, setup, code):
    path = f"/{setup}-{uuid.uuid4().hex}"
    if setup == "redirect_to_metadata":
        files.redirect(path, "http://169.254.169.254/latest/meta-data/")
    elif setup == "redirect_to_file":
        files.redirect(path, "file:///etc/passwd")
    elif setup == "too_large":
        files.large(path, 2 * 1024 * 1024, content_type="application/pdf")
    elif setup == "html_instead_of_pdf":
        files.add(path, b"<html><body>Please log in</body></html>", "text/html")
    elif setup == "slow":
        files.drip(path, chunk=b"%PDF", count=100, interval=0.3, content_type="application/pdf")
    for run_kind in ("execute", "start"):
        body = {"mthds_contents": [PDF_BUNDLE], "inputs": document_input(files.url(path))}
        response = await fetching_app.client.post(f"/api/v1/pipeline/{run_kind}", json=body)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["code"] == code, problem
        assert "'doc'" in problem["detail"], problem
        assert "root:x:" not in response.text
    assert stub.stats()["total_calls"] == 0
    listed = (await fetching_app.client.get("/api/v1/runs")).json()["runs"]
    assert all(run["pipeline_state"] != "STARTED" for run in listed)  # a refused /start created no run


async def test_private_hosts_are_refused_by_default(client, files, stub):
    path = f"/private-{uuid.uuid4().hex}.pdf"
    files.add(path, make_pdf("private"), "application/pdf")
    body = {"mthds_contents": [PDF_BUNDLE], "inputs": document_input(files.url(path))}
    response = await client.post("/api/v1/pipeline/execute", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "security.input_url_refused"
    assert files.hits(path) == 0
    assert stub.stats()["total_calls"] == 0


# ---------------------------------------------------------------- large outputs


async def test_large_output_is_linked_not_inlined(make_app):
    app = await make_app(output_inline_max_bytes=200)
    pdf = make_pdf(*[f"line {n} of a long page with enough text to pass the inline limit" for n in range(20)])
    run_id = f"big-{uuid.uuid4().hex}"
    body = {"pipeline_run_id": run_id, "mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": document_input(data_url(pdf, "application/pdf"))}
    started = await app.client.post("/api/v1/pipeline/start", json=body)
    assert started.status_code == 202, started.text
    document = await wait_for_end(app.client, run_id)
    assert document["pipeline_state"] == "COMPLETED", document
    assert document["pipe_output"] is None
    assert document["output_url"] == f"/api/v1/runs/{run_id}/output"
    output = await app.client.get(document["output_url"])
    assert output.status_code == 200
    full = output.json()
    assert "line 19 of a long page" in json.dumps(full)
    assert len(output.content) > 200

    # /execute waits for the result and gets it whole, with the link too
    executed = await app.client.post("/api/v1/pipeline/execute", json={**body, "pipeline_run_id": f"{run_id}-x"})
    assert executed.status_code == 200, executed.text
    assert "line 19 of a long page" in json.dumps(executed.json()["pipe_output"])
    assert len(json.dumps(executed.json()["pipe_output"])) > 200
    assert executed.json()["output_url"] == f"/api/v1/runs/{run_id}-x/output"


async def test_small_output_is_inlined_and_also_served_by_the_output_route(client):
    body = {"mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": document_input(data_url(make_pdf("small"), "application/pdf"))}
    answer = (await client.post("/api/v1/pipeline/execute", json=body)).json()
    output = await client.get(f"/api/v1/runs/{answer['pipeline_run_id']}/output")
    assert output.status_code == 200
    assert output.json() == answer["pipe_output"]
    assert answer["output_url"] is None


async def test_output_of_a_run_that_did_not_complete_is_a_409(client, stub):
    stub.configure(fail={"status": 400})
    body = {"mthds_contents": [IMAGE_BUNDLE], "inputs": {"picture": {"concept": "Image", "content": {"url": data_url(PNG, "image/png")}}}}
    failed = await client.post("/api/v1/pipeline/execute", json=body)
    assert failed.status_code >= 400
    run_id = failed.json()["pipeline_run_id"]
    response = await client.get(f"/api/v1/runs/{run_id}/output")
    assert response.status_code == 409
    assert response.json()["code"] == "run.not_completed"
    assert (await client.get("/api/v1/runs/no-such-run/output")).status_code == 404


async def test_uploads_follow_the_run_retention_setting(make_app):
    from datetime import timedelta

    import sqlalchemy as sa

    from pipelex_server.store.tables import uploads

    app = await make_app(run_retention_days=1)
    old = (await app.client.post("/api/v1/uploads", files={"file": ("old.txt", b"old bytes", "text/plain")})).json()
    new = (await app.client.post("/api/v1/uploads", files={"file": ("new.txt", b"new bytes", "text/plain")})).json()
    database = app.services.uploads.repository.engine
    async with database.begin() as connection:
        row = (await connection.execute(sa.select(uploads.c.created_at).where(uploads.c.id == old["upload_id"]))).scalar_one()
        await connection.execute(sa.update(uploads).where(uploads.c.id == old["upload_id"]).values(created_at=row - timedelta(days=2)))
    assert await app.services.uploads.purge_expired() == 1
    assert (await app.client.get(f"/api/v1/uploads/{old['upload_id']}")).status_code == 404
    assert not (storage_root(app) / old["uri"].removeprefix("pipelex-storage://")).exists()
    assert (await app.client.get(f"/api/v1/uploads/{new['upload_id']}")).status_code == 200


TWO_DOCUMENTS_BUNDLE = '''domain = "twodocs"
main_pipe = "read_both"

[pipe.read_both]
type = "PipeLLM"
description = "Read two documents"
inputs = { first = "Document", second = "Document" }
output = "Text"
prompt = """
Compare:
@first
@second
"""
'''


async def test_a_refused_start_leaves_nothing_stored(fetching_app, files, stub):
    """The first input is stored at once; the second (a slow server) is refused a second later: nothing stays."""
    path = f"/slow-{uuid.uuid4().hex}"
    files.drip(path, chunk=b"%PDF", count=100, interval=0.3, content_type="application/pdf")
    run_id = f"refused-{uuid.uuid4().hex}"
    inputs = {
        "first": {"concept": "Document", "content": {"url": data_url(make_pdf("kept?"), "application/pdf")}},
        "second": {"concept": "Document", "content": {"url": files.url(path)}},
    }
    body = {"pipeline_run_id": run_id, "mthds_contents": [TWO_DOCUMENTS_BUNDLE], "inputs": inputs}
    response = await fetching_app.client.post("/api/v1/pipeline/start", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "input.url_unreachable"
    assert (await fetching_app.client.get(f"/api/v1/runs/{run_id}")).status_code == 404
    assert not stored_files(storage_root(fetching_app) / "shared" / "runs" / run_id)
    assert stub.stats()["total_calls"] == 0
