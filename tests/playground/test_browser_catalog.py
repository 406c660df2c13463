"""The playground with the methods catalog and stored files, in a real Chromium against a real server and the stub LLM:
pick a method and run it by id, save a draft (and its 409 conflict), publish (published / unchanged / refused), a stored
image output shown inline through a signed link, and the re-run of a run started elsewhere, prefilled from its record."""

from __future__ import annotations

import base64
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.playground.steps import ECHO_BUNDLE, RUN_TIMEOUT_MS, expect, open_playground, paste_and_validate, run_and_wait, shot
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

# A method whose main result is a stored file: the Image input's storage address, composed into a structured output.
PICTURE_BUNDLE = """domain = "album"
main_pipe = "frame"

[concept.Framed]
description = "A picture, framed"

[concept.Framed.structure]
url = { type = "text", description = "Where the picture is stored", required = true }

[pipe.frame]
type = "PipeCompose"
description = "Frame the picture"
inputs = { photo = "Image" }
output = "Framed"

[pipe.frame.construct]
url = { from = "photo.url" }
"""


def gradient_png(size: int = 96) -> bytes:
    """A size x size RGB PNG (a colour gradient), visible in a screenshot."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(value for x in range(size) for value in (x * 255 // size, y * 255 // size, 160)) for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = gradient_png()


def create_method(server: Any, name: str, bundle: str, *, publish: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    with server.client() as http:
        created = http.post("/v1/methods", json={"name": name, "files": {"echo.mthds": bundle, **(extra or {})}})
        assert created.status_code == 201, created.text
        method = created.json()
        if publish:
            published = http.post(f"/v1/methods/{method['method_id']}/publish", json={"expected_draft_updated_at": method["updated_at"]})
            assert published.json()["outcome"] == "published", published.text
        return method


async def open_from_catalog(page: Any, query: str, version: str = "draft") -> None:
    catalog = page.get_by_test_id("catalog")
    if not await catalog.evaluate("node => node.open"):
        await catalog.locator("summary").click()
    await page.get_by_test_id("catalog-search").fill(query)
    await page.get_by_test_id("catalog-refresh").click()
    item = page.get_by_test_id("catalog-list").get_by_test_id("catalog-item")
    await expect(item).to_have_count(1, timeout=RUN_TIMEOUT_MS)
    await item.get_by_test_id("catalog-version").select_option(version)
    await item.get_by_test_id("catalog-open").click()
    # reading the files and validating the method (a first load of its library) may take a while on a busy machine
    await expect(page.get_by_test_id("catalog-selector")).to_contain_text(f"@{version}", timeout=RUN_TIMEOUT_MS)
    await expect(page.get_by_test_id("validate-button")).to_be_enabled(timeout=RUN_TIMEOUT_MS)  # validated


def run_record(server: Any, run_id: str) -> dict[str, Any]:
    with server.client() as http:
        return http.get(f"/v1/runs/{run_id}").json()


async def test_pick_a_method_run_it_by_id_save_its_draft_and_publish(page: Any, server: Any, stub: Any, screenshots: Path) -> None:
    method = create_method(server, "Catalog echo", ECHO_BUNDLE, publish=True)
    method_id = method["method_id"]
    await open_playground(page, server)
    await open_from_catalog(page, "catalog ECHO")  # q is case-insensitive
    await expect(page.get_by_test_id("bundle-editor")).to_have_value(ECHO_BUNDLE)
    await expect(page.get_by_test_id("catalog-selector")).to_contain_text(f"{method_id}@draft")
    await expect(page.get_by_test_id("verdict-state")).to_have_text("Valid")
    await expect(page.get_by_test_id("graph")).to_contain_text("echo")
    await page.get_by_test_id("input-text").fill("BY-ID-DRAFT")
    request = await page.get_by_test_id("request-json").input_value()
    assert f'"method_id": "{method_id}@draft"' in request and "mthds_contents" not in request and '"files"' not in request
    await page.locator("#request-details summary").click()  # the screenshot shows the request naming the method
    await shot(page, screenshots, "12-catalog")
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-text")).to_contain_text("BY-ID-DRAFT")
    with server.client() as http:
        runs = http.get("/v1/runs", params={"method_id": method_id}).json()["items"]
    assert [run["method_version"] for run in runs] == ["draft"]

    # a published version: validated and run as mt_x@1
    await open_from_catalog(page, "Catalog echo", "1")
    await expect(page.get_by_test_id("catalog-selector")).to_contain_text(f"{method_id}@1")
    await page.get_by_test_id("input-text").fill("BY-ID-V1")
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-text")).to_contain_text("BY-ID-V1")
    with server.client() as http:
        runs = http.get("/v1/runs", params={"method_id": method_id}).json()["items"]
    assert sorted(str(run["method_version"]) for run in runs) == ["1", "draft"]

    # save as draft: an edit detaches the editor from the id; someone else saves the draft meanwhile: a 409, shown
    await open_from_catalog(page, "Catalog echo")
    edited = ECHO_BUNDLE.replace('prompt = "$text"', 'prompt = "EDITED $text"')
    await page.get_by_test_id("bundle-editor").fill(edited)
    await expect(page.get_by_test_id("catalog-selector")).to_contain_text("edited since opened")
    assert "EDITED" in await page.get_by_test_id("request-json").input_value()  # the editor's text is sent, not the id
    with server.client() as http:
        current = http.get(f"/v1/methods/{method_id}").json()
        theirs = http.put(
            f"/v1/methods/{method_id}/draft",
            json={"files": {"echo.mthds": ECHO_BUNDLE + "# theirs\n"}, "expected_updated_at": current["updated_at"]},
        )
        assert theirs.status_code == 200, theirs.text
    await page.get_by_test_id("save-draft").click()
    result = page.get_by_test_id("catalog-result")
    await expect(result).to_contain_text("Conflict: the draft was saved elsewhere")
    await expect(result.get_by_test_id("conflict")).to_contain_text("409 pipelex.catalog.update_conflict")
    await expect(page.get_by_test_id("bundle-editor")).to_have_value(edited)  # the user's text is kept
    await shot(page, screenshots, "13-draft-conflict")
    with server.client() as http:
        assert http.get(f"/v1/methods/{method_id}").json()["updated_at"] == theirs.json()["updated_at"]  # nothing written
    await result.get_by_test_id("conflict-overwrite").click()
    await expect(result).to_contain_text("Draft saved", timeout=RUN_TIMEOUT_MS)
    await expect(page.get_by_test_id("catalog-selector")).to_contain_text(f"{method_id}@draft")

    # publish: version 2, then unchanged, then an invalid draft is refused with its verdict
    await page.get_by_test_id("publish-button").click()
    await expect(result).to_contain_text("Published as version 2", timeout=RUN_TIMEOUT_MS)
    await page.get_by_test_id("publish-button").click()
    await expect(result).to_contain_text("Unchanged: the draft is already version 2")
    await page.get_by_test_id("bundle-editor").fill(ECHO_BUNDLE.replace('output = "Text"', 'output = "NoSuchConcept"'))
    await page.get_by_test_id("save-draft").click()
    await expect(result).to_contain_text("Draft saved", timeout=RUN_TIMEOUT_MS)
    await expect(page.get_by_test_id("verdict-state")).to_have_text("Invalid", timeout=RUN_TIMEOUT_MS)  # the saved draft, validated by id
    await page.get_by_test_id("publish-button").click()
    await expect(result).to_contain_text("Refused (invalid)", timeout=RUN_TIMEOUT_MS)
    await expect(result.get_by_test_id("publish-error").first).to_be_visible()
    await shot(page, screenshots, "14-publish-refused")
    assert [error for error in page.errors if "409" not in error] == []  # the conflict's 409 is the one failed request
    with server.client() as http:
        versions = http.get(f"/v1/methods/{method_id}/versions").json()["items"]
        assert [version["version"] for version in versions] == [2, 1]


async def test_a_method_holding_a_binary_file_runs_by_id_but_its_draft_is_not_overwritten(page: Any, server: Any, stub: Any) -> None:
    method = create_method(
        server, "With a logo", ECHO_BUNDLE, publish=False, extra={"logo.png": {"base64": base64.b64encode(PNG).decode()}}
    )
    await open_playground(page, server)
    await open_from_catalog(page, "With a logo")
    current = page.get_by_test_id("catalog-current")
    await expect(current).to_contain_text("Not in the editor (not text): logo.png")
    await page.get_by_test_id("input-text").fill("WITH-LOGO")
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-text")).to_contain_text("STUB: WITH-LOGO")
    await page.get_by_test_id("save-draft").click()
    await expect(page.get_by_test_id("catalog-result")).to_contain_text(
        "Not saved: this method holds files the editor cannot hold (logo.png)"
    )
    with server.client() as http:
        assert http.get(f"/v1/methods/{method['method_id']}").json()["updated_at"] == method["updated_at"]


async def test_a_stored_image_output_is_shown_inline_through_a_signed_link(page: Any, server: Any, screenshots: Path) -> None:
    with server.client() as http:
        upload = http.post("/v1/upload", json={"filename": "dot.png", "content_type": "image/png", "data": base64.b64encode(PNG).decode()})
        assert upload.status_code == 200, upload.text
    uri = upload.json()["uri"]
    await open_playground(page, server)
    await paste_and_validate(page, PICTURE_BUNDLE)
    await expect(page.get_by_test_id("verdict-state")).to_have_text("Valid")
    await page.get_by_test_id("input-photo-url").fill(uri)
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    main = page.get_by_test_id("output-main")
    image = main.get_by_test_id("output-image")
    await expect(image).to_be_visible()
    source = await image.get_attribute("src")
    assert source.startswith(f"{server.url}/v1/storage/"), source
    assert await image.evaluate("node => node.complete && node.naturalWidth") == 96  # fetched and decoded under the CSP
    await expect(main.get_by_test_id("stored-file-link")).to_have_attribute("href", source)
    await shot(page, screenshots, "15-stored-image")
    assert not page.errors, page.errors


async def test_a_stored_file_on_s3_is_offered_as_a_link_the_page_does_not_fetch(page: Any, s3_server: Any, tmp_path: Path) -> None:
    bucket = f"playground-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    with ServerProcess(tmp_path / "s3", env={**s3_server.env(), "S3_BUCKET": bucket}) as server:
        with server.client() as http:
            upload = http.post(
                "/v1/upload", json={"filename": "dot.png", "content_type": "image/png", "data": base64.b64encode(PNG).decode()}
            )
            assert upload.status_code == 200, upload.text
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        await open_playground(page, server)
        await paste_and_validate(page, PICTURE_BUNDLE)
        await page.get_by_test_id("input-photo-url").fill(upload.json()["uri"])
        await run_and_wait(page)
        main = page.get_by_test_id("output-main")
        await expect(main.get_by_test_id("stored-file-remote")).to_contain_text("the page does not fetch it")
        link = await main.get_by_test_id("stored-file-link").get_attribute("href")
        assert link.startswith(s3_server.endpoint_url), link
        await expect(main.get_by_test_id("output-image")).to_have_count(0)
        assert all(url.startswith(server.url) for url in requested), [url for url in requested if not url.startswith(server.url)]
        async with httpx.AsyncClient() as outside:  # the link itself works, outside the page
            assert (await outside.get(link)).content == PNG


async def test_rerun_of_a_run_started_elsewhere_prefills_the_method_and_inputs(
    page: Any, server: Any, stub: Any, screenshots: Path
) -> None:
    method = create_method(server, "Rerun echo", ECHO_BUNDLE, publish=True)
    with server.client() as http:
        by_text = http.post("/api/v1/pipeline/execute", json={"mthds_contents": [ECHO_BUNDLE], "inputs": {"text": "FROM-CURL"}})
        assert by_text.status_code == 200, by_text.text
        by_id = http.post("/api/v1/pipeline/execute", json={"method_id": f"{method['method_id']}@1", "inputs": {"text": "FROM-SDK"}})
        assert by_id.status_code == 200, by_id.text
        by_tree = http.post("/api/v1/pipeline/execute", json={"files": {"a.mthds": ECHO_BUNDLE}, "inputs": {"text": "FROM-TREE"}})
        assert by_tree.status_code == 200, by_tree.text
    await open_playground(page, server)
    await page.locator("#tab-history").click()
    detail = page.get_by_test_id("run-detail")

    async def rerun(run_id: str) -> None:
        await page.locator("#tab-history").click()
        await page.locator(f"[data-run-id='{run_id}']").click()
        await expect(detail.get_by_test_id("output-state")).to_be_visible()
        await page.locator("#detail-rerun").click()

    # a run sent as text: the editor gets its bundle, the form its input; the user presses Run
    await rerun(by_text.json()["pipeline_run_id"])
    await expect(page.locator("#view-build")).to_be_visible()
    await expect(page.locator("#notice")).to_contain_text("Prefilled from run", timeout=RUN_TIMEOUT_MS)
    await expect(page.get_by_test_id("bundle-editor")).to_have_value(ECHO_BUNDLE)
    await expect(page.get_by_test_id("input-text")).to_have_value("FROM-CURL")
    await shot(page, screenshots, "16-rerun-prefilled")
    output = page.get_by_test_id("output")
    await page.get_by_test_id("run-button").click()
    await expect(output.get_by_test_id("output-text")).to_contain_text("STUB: FROM-CURL", timeout=RUN_TIMEOUT_MS)

    # a run of a published version: the version is opened from the catalog and run by id again
    await rerun(by_id.json()["pipeline_run_id"])
    await expect(page.get_by_test_id("catalog-selector")).to_contain_text(f"{method['method_id']}@1", timeout=RUN_TIMEOUT_MS)
    await expect(page.get_by_test_id("input-text")).to_have_value("FROM-SDK")
    assert f'"{method["method_id"]}@1"' in await page.get_by_test_id("request-json").input_value()
    await page.get_by_test_id("run-button").click()
    await expect(output.get_by_test_id("output-text")).to_contain_text("FROM-SDK", timeout=RUN_TIMEOUT_MS)
    with server.client() as http:  # the re-run is recorded as a run of version 1, as the original was
        runs = http.get("/v1/runs", params={"method_id": method["method_id"]}).json()["items"]
    assert [str(run["method_version"]) for run in runs] == ["1", "1"]

    # a run of a file tree: its tree is not kept, and the page says so
    await rerun(by_tree.json()["pipeline_run_id"])
    await expect(page.locator("#notice")).to_contain_text("which the run record does not keep", timeout=RUN_TIMEOUT_MS)
    assert "FROM-TREE" in await page.get_by_test_id("request-json").input_value()
    assert not [error for error in page.errors if "409" not in error], page.errors
