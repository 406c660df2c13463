"""The platform's files over the in-process app: the SDK's JSON upload and the multipart one sharing records, the list
with its filters and signed cursors, one file, by address, the rename rules, links; caller isolation (JWT, two callers).
Answers are read with the SDK's own models."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from mthds.protocol.problem.models import Problem
from pipelex_sdk.product_models import FileDetail, FileLinksResult, FilePage, FileRecord, FileRecordList, UploadedFile

SECRET = "files-test-secret-that-is-long-enough-for-hs256"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


_suffix = ["-0"]


@pytest.fixture(autouse=True)
def fresh_callers() -> None:
    """Each test's callers are its own (the PostgreSQL database is shared by the session)."""
    _suffix[0] = f"-{uuid.uuid4().hex[:8]}"


def caller(user: str) -> str:
    return user + _suffix[0]


def bearer(user: str) -> dict[str, str]:
    token = jwt.encode({"user_id": caller(user), "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    document = response.json()
    assert document["code"] == code, document
    for member in ("type", "title", "status", "detail", "domain", "retry", "next_step"):
        assert member in document, member
    assert all(value is not None for key, value in document.items() if key != "request_id"), document
    Problem.model_validate(document)
    return document


def upload_body(name: str, data: bytes, content_type: str, **extra: Any) -> dict[str, Any]:
    return {"filename": name, "data": base64.b64encode(data).decode(), "content_type": content_type, **extra}


@pytest.fixture
async def jwt_app(make_app: Any, database_url: str) -> Any:
    return await make_app(auth_mode="jwt", jwt_secret_key=SECRET, database_url=database_url)


async def upload(app: Any, user: str, name: str, data: bytes, content_type: str = "text/plain", **extra: Any) -> UploadedFile:
    response = await app.client.post("/v1/upload", json=upload_body(name, data, content_type, **extra), headers=bearer(user))
    assert response.status_code == 200, response.text
    return UploadedFile.model_validate(response.json())


async def test_json_upload_records_a_file_the_list_and_the_reads_show(jwt_app: Any) -> None:
    uploaded = await upload(jwt_app, "ann", "March invoice.txt", b"hello files")
    assert (
        uploaded.uri.startswith(f"pipelex-storage://{caller('ann')}/uploads/")
        and uploaded.file_id
        and uploaded.filename == "March invoice.txt"
    )
    page = FilePage.model_validate((await jwt_app.client.get("/v1/files", headers=bearer("ann"))).json())
    assert [item.file_id for item in page.items] == [uploaded.file_id] and page.next_cursor is None
    summary = page.items[0]
    assert (summary.name, summary.media_type, summary.format, summary.size, summary.kind) == (
        "March invoice.txt",
        "text/plain",
        "text",
        11,
        "uploaded",
    )
    assert summary.origin.surface == "raw_http" and summary.created_by == caller("ann")

    detail = FileDetail.model_validate((await jwt_app.client.get(f"/v1/files/{uploaded.file_id}", headers=bearer("ann"))).json())
    assert detail.original_name == "March invoice.txt" and detail.state == "stored" and detail.uses.items == [] and detail.method_ids == []
    by_uri = FileRecordList.model_validate(
        (await jwt_app.client.get("/v1/files/by-uri", params={"uri": uploaded.uri}, headers=bearer("ann"))).json()
    )
    assert [record.file_id for record in by_uri.items] == [uploaded.file_id]


async def test_the_multipart_upload_shares_the_records_and_its_delete_removes_them(jwt_app: Any) -> None:
    response = await jwt_app.client.post("/api/v1/uploads", files={"file": ("pixel.png", PNG, "image/png")}, headers=bearer("bo"))
    assert response.status_code == 201, response.text
    upload_id, uri = response.json()["upload_id"], response.json()["uri"]
    page = FilePage.model_validate((await jwt_app.client.get("/v1/files", params={"format": "image"}, headers=bearer("bo"))).json())
    assert [(item.uri, item.name, item.format) for item in page.items] == [(uri, "pixel.png", "image")]
    assert (await jwt_app.client.delete(f"/api/v1/uploads/{upload_id}", headers=bearer("bo"))).status_code == 204
    assert FilePage.model_validate((await jwt_app.client.get("/v1/files", headers=bearer("bo"))).json()).items == []


async def test_filters_and_cursor_pages_and_cursor_tampering_is_a_400(jwt_app: Any) -> None:
    ids = [(await upload(jwt_app, "cy", f"note-{index}.txt", f"note {index}".encode())).file_id for index in range(5)]
    await upload(jwt_app, "cy", "pixel.png", PNG, "image/png")
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, "media_type": "text/plain"}
        if cursor:
            params["cursor"] = cursor
        page = FilePage.model_validate((await jwt_app.client.get("/v1/files", params=params, headers=bearer("cy"))).json())
        seen += [item.file_id for item in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))
    first = FilePage.model_validate((await jwt_app.client.get("/v1/files", params={"limit": 2}, headers=bearer("cy"))).json())
    assert first.next_cursor
    tampered = first.next_cursor[:-1] + ("0" if first.next_cursor[-1] != "0" else "1")
    for bad in (tampered, "garbage", first.next_cursor.split(".")[0]):
        assert_problem(await jwt_app.client.get("/v1/files", params={"cursor": bad}, headers=bearer("cy")), 400, "request.invalid")
    # a cursor is bound to its filters and to its caller
    other_filters = {"cursor": first.next_cursor, "q": "note"}
    assert_problem(await jwt_app.client.get("/v1/files", params=other_filters, headers=bearer("cy")), 400, "request.invalid")
    assert_problem(
        await jwt_app.client.get("/v1/files", params={"cursor": first.next_cursor}, headers=bearer("dee")), 400, "request.invalid"
    )
    searched = FilePage.model_validate((await jwt_app.client.get("/v1/files", params={"q": "NOTE-3"}, headers=bearer("cy"))).json())
    assert [item.name for item in searched.items] == ["note-3.txt"]
    assert_problem(
        await jwt_app.client.get("/v1/files", params={"created_from": "2026-01-01"}, headers=bearer("cy")), 400, "request.invalid"
    )
    assert_problem(await jwt_app.client.get("/v1/files", params={"kind": "nope"}, headers=bearer("cy")), 422, "request.invalid")
    for hostile in ({"media_type": "\0"}, {"q": "a\0"}, {"run_id": "\0"}, {"method_id": "mt_\0"}, {"created_from": "\0"}):
        assert (await jwt_app.client.get("/v1/files", params=hostile, headers=bearer("cy"))).status_code in (400, 422), hostile
    unknown_format = await jwt_app.client.get("/v1/files", params={"format": "nope"}, headers=bearer("cy"))
    assert FilePage.model_validate(unknown_format.json()) == FilePage(items=[], next_cursor=None)


async def test_rename_follows_the_name_rules(jwt_app: Any) -> None:
    uploaded = await upload(jwt_app, "ed", "invoice.pdf", b"%PDF-1.4 not really", "application/pdf")

    async def rename(name: str) -> httpx.Response:
        return await jwt_app.client.patch(f"/v1/files/{uploaded.file_id}", json={"name": name}, headers=bearer("ed"))

    assert FileRecord.model_validate((await rename("  March invoice ")).json()).name == "March invoice.pdf"
    assert FileRecord.model_validate((await rename("March.docx")).json()).name == "March.docx.pdf"
    assert FileRecord.model_validate((await rename("Q1\u202e.PDF")).json()).name == "Q1.PDF"
    record = FileRecord.model_validate((await rename("Final")).json())
    assert (record.name, record.original_name, record.uri) == ("Final.pdf", "invoice.pdf", uploaded.uri)
    assert_problem(await rename("\u200b \t"), 422, "request.invalid")
    assert_problem(await rename("x" * 513), 422, "request.invalid")


async def test_upload_refusals_name_the_field(jwt_app: Any) -> None:
    async def post(body: dict[str, Any]) -> httpx.Response:
        return await jwt_app.client.post("/v1/upload", json=body, headers=bearer("fay"))

    assert_problem(await post({"filename": "a.txt", "data": "%%%", "content_type": "text/plain"}), 422, "request.invalid")
    assert_problem(await post(upload_body("a.txt", b"x", "text/plain", kind="test")), 422, "request.invalid")
    assert_problem(await post(upload_body("a.txt", b"x", "text/plain", method_id="mt_x")), 422, "request.invalid")
    assert_problem(await post(upload_body("a.txt", b"x", "text/plain", kind="generated")), 422, "request.invalid")
    assert_problem(await post(upload_body("a.txt", b"x", "text/plain", kind="test", method_id="mt_nope")), 404, "pipelex.catalog.not_found")
    created = await jwt_app.client.post("/v1/methods", json={"name": "For tests"}, headers=bearer("fay"))
    assert created.status_code == 201, created.text
    method_id = created.json()["method_id"]
    test_file = await upload(jwt_app, "fay", "case.txt", b"x", kind="test", method_id=method_id)
    detail = FileDetail.model_validate((await jwt_app.client.get(f"/v1/files/{test_file.file_id}", headers=bearer("fay"))).json())
    assert (detail.kind, detail.origin.method_id) == ("test", method_id)
    other = await jwt_app.client.post(
        "/v1/upload", json=upload_body("a.txt", b"x", "text/plain", kind="test", method_id=method_id), headers=bearer("gus")
    )
    assert_problem(other, 404, "pipelex.catalog.not_found")


async def test_another_callers_file_is_an_unknown_file(jwt_app: Any) -> None:
    mine = await upload(jwt_app, "gus", "mine.txt", b"mine")
    for response in (
        await jwt_app.client.get(f"/v1/files/{mine.file_id}", headers=bearer("hal")),
        await jwt_app.client.get("/v1/files/fl_00000000000000000000000000000000", headers=bearer("hal")),
        await jwt_app.client.patch(f"/v1/files/{mine.file_id}", json={"name": "x"}, headers=bearer("hal")),
    ):
        assert_problem(response, 404, "pipelex.storage.not_found")
    assert_problem(
        await jwt_app.client.get("/v1/files/by-uri", params={"uri": mine.uri}, headers=bearer("hal")), 403, "pipelex.org.mismatch"
    )
    assert_problem(
        await jwt_app.client.get("/v1/files/by-uri", params={"uri": "https://x/y"}, headers=bearer("hal")),
        422,
        "pipelex.storage.uri_invalid",
    )
    assert FilePage.model_validate((await jwt_app.client.get("/v1/files", headers=bearer("hal"))).json()).items == []
    links = await jwt_app.client.post(
        "/v1/files/links", json={"files": [{"file_id": mine.file_id}, {"uri": mine.uri}, {"uri": "nope"}]}, headers=bearer("hal")
    )
    result = FileLinksResult.model_validate(links.json(), context={"requested_files": 3})
    assert [item.error.code for item in result.items if item.error] == ["not_found", "forbidden", "invalid_storage_uri"]


async def test_links_download_the_file_under_its_name(jwt_app: Any) -> None:
    uploaded = await upload(jwt_app, "ivy", "pixel.png", PNG, "image/png")
    await jwt_app.client.patch(f"/v1/files/{uploaded.file_id}", json={"name": "été"}, headers=bearer("ivy"))
    answer = await jwt_app.client.post(
        "/v1/files/links", json={"files": [{"file_id": uploaded.file_id}, {"uri": uploaded.uri}]}, headers=bearer("ivy")
    )
    result = FileLinksResult.model_validate(answer.json(), context={"requested_files": 2})
    for item in result.items:
        assert item.error is None and item.name == "été.png" and item.media_type == "image/png"
        download = await jwt_app.client.get(item.url)  # no credential: the link is the permission
        assert download.status_code == 200 and download.content == PNG
        assert download.headers["content-type"] == "image/png"
        assert download.headers["content-disposition"] == "inline; filename=\"ete.png\"; filename*=UTF-8''%C3%A9t%C3%A9.png"
