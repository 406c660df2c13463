"""The playground in a real Chromium against a real server and the stub LLM: write, validate, run, watch, cancel, auth."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_documents import EXTRACT_ONLY_BUNDLE, make_pdf
from tests.playground.conftest import API_KEY
from tests.playground.steps import (
    ECHO_BUNDLE,
    RUN_TIMEOUT_MS,
    SLOW_BUNDLE,
    expect,
    open_playground,
    paste_and_validate,
    run_and_wait,
    shot,
)
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, SEQUENCE_BUNDLE

pytestmark = pytest.mark.slow


async def test_seed_bundle_validate_graph_form_live_run_output_and_history(page: Any, server: Any, stub: Any, screenshots: Path) -> None:
    await open_playground(page, server)
    await shot(page, screenshots, "01-empty")
    await paste_and_validate(page, SEED_BUNDLE)
    await expect(page.get_by_test_id("verdict-state")).to_have_text("Valid")
    graph = page.get_by_test_id("graph")
    await expect(graph.locator("svg g.node")).to_have_count(2)  # the method's input and its one pipe
    await expect(graph).to_contain_text("summarize")
    await page.get_by_test_id("input-text").fill(SEED_TEXT)
    request = await page.get_by_test_id("request-json").input_value()
    assert SEED_TEXT in request and '"mthds_contents"' in request
    await shot(page, screenshots, "02-validated")

    # an edit after the inputs were filled: Run validates again and keeps the inputs, which did not change
    await page.get_by_test_id("bundle-editor").fill(SEED_BUNDLE + "# edited\n")
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    progress = page.get_by_test_id("progress")
    await expect(progress.locator("li[data-pipe='summarize'].finished")).to_have_count(1)
    await expect(progress.locator("li[data-pipe='summarize']")).to_contain_text("tok")
    await expect(page.get_by_test_id("output-text")).to_contain_text("STUB: Summarize in one sentence")
    await expect(page.get_by_test_id("usage")).to_contain_text("tokens in")
    assert "Summarize in one sentence" in stub.stats()["recent"][-1]["prompt"]
    await page.get_by_text("This request as curl or Python").click()
    await expect(page.get_by_test_id("curl-snippet")).to_contain_text("/api/v1/pipeline/execute")
    await expect(page.get_by_test_id("python-snippet")).to_contain_text("PipelexAPIClient")
    await shot(page, screenshots, "03-live-run")

    # history: the run is listed, opens with its events, and can be deleted
    await page.locator("#tab-history").click()
    rows = page.get_by_test_id("runs-list").get_by_test_id("run-row")
    await expect(rows.first).to_contain_text("COMPLETED")
    await rows.first.click()
    detail = page.get_by_test_id("run-detail")
    await expect(detail.get_by_test_id("output-text")).to_contain_text("STUB: Summarize")
    await expect(detail.get_by_test_id("run-events").locator("li.finished")).to_have_count(1)
    await expect(detail.get_by_test_id("run-inputs")).to_contain_text(SEED_TEXT[:20])
    await shot(page, screenshots, "07-history")
    # re-run with the same inputs: back on the playground, a new run of the same request completes
    await detail.get_by_test_id("output-text").wait_for()
    await page.locator("#detail-rerun").click()
    await expect(page.locator("#view-build")).to_be_visible()
    # the click set the run state to "submitting" at once: it reads COMPLETED again only when the new run has ended
    await expect(page.get_by_test_id("run-state")).to_have_text("COMPLETED", timeout=RUN_TIMEOUT_MS)
    await page.locator("#tab-history").click()
    await expect(rows).to_have_count(2)
    run_id = await rows.last.get_attribute("data-run-id")
    await rows.last.click()
    await expect(detail.get_by_test_id("output-text")).to_be_visible()
    await page.locator("#detail-delete").click()
    await expect(page.locator(f"[data-run-id='{run_id}']")).to_have_count(0)
    with server.client() as http:
        assert http.get(f"/api/v1/runs/{run_id}").status_code == 404
    assert page.errors == []


async def test_sequence_shows_each_pipe_in_graph_and_timeline(page: Any, server: Any, stub: Any) -> None:
    await open_playground(page, server)
    await paste_and_validate(page, SEQUENCE_BUNDLE)
    graph = page.get_by_test_id("graph")
    await expect(graph.locator("svg g.node")).to_have_count(4)  # the input note and the three steps
    await expect(graph.locator("text.edge-label")).to_have_text(["dishes", "draft"])
    await page.get_by_test_id("input-note").fill("leeks and lentils")
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    progress = page.get_by_test_id("progress")
    for pipe in ("write_card", "list_dishes", "draft_card", "polish_card"):
        await expect(progress.locator(f"li[data-pipe='{pipe}'].finished")).to_have_count(1)
    await expect(page.get_by_test_id("output-text")).to_contain_text("STUB: STEP3 polish")


async def test_dry_run(page: Any, server: Any, stub: Any, screenshots: Path) -> None:
    await open_playground(page, server)
    await page.get_by_test_id("example-button").click()  # the README's example, its text filled in
    await expect(page.get_by_test_id("input-text")).to_have_value(SEED_TEXT)
    await page.get_by_test_id("dry-run-toggle").check()
    assert '"dry_run": true' in await page.get_by_test_id("request-json").input_value()
    calls = stub.stats()["total_calls"]
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    await expect(page.get_by_test_id("output")).to_contain_text("(dry run)")
    assert stub.stats()["total_calls"] == calls  # a dry run mocks every inference call
    await shot(page, screenshots, "04-dry-run")


async def test_invalid_bundle_shows_its_located_error(page: Any, server: Any, screenshots: Path) -> None:
    await open_playground(page, server)
    broken = SEED_BUNDLE.replace('inputs = { text = "Text" }', 'inputs = { text = "Text" ')
    await paste_and_validate(page, broken)
    await expect(page.get_by_test_id("verdict-state")).to_have_text("Invalid")
    error = page.get_by_test_id("verdict-error").first
    await expect(error).to_contain_text("method.syntax")
    await expect(error.get_by_test_id("verdict-location")).to_have_text(re.compile(r"line \d+"))
    await expect(page.get_by_test_id("inputs-form")).to_contain_text("Fix the method")
    await expect(page.get_by_test_id("error-line")).to_have_count(1)  # the located line is marked in the editor
    await error.get_by_role("button", name="Go to").click()
    await expect(page.get_by_test_id("bundle-editor")).to_be_focused()
    await shot(page, screenshots, "05-invalid")

    await paste_and_validate(page, SEED_BUNDLE.replace('"Text" }', '"Txt" }', 1))
    unresolved = page.get_by_test_id("verdict-error").first
    await expect(unresolved).to_contain_text("method.concept_unresolved")
    await expect(unresolved.get_by_test_id("verdict-location")).to_contain_text("pipe summarize")


async def test_cancel_a_slow_run(page: Any, server: Any, stub: Any, screenshots: Path) -> None:
    stub.configure(timeout={"seconds": 60, "match": "SLOW-MARKER"})  # the model hangs on this run's prompt
    await open_playground(page, server)
    await paste_and_validate(page, SLOW_BUNDLE)
    await page.get_by_test_id("input-text").fill("take your time")
    await page.get_by_test_id("run-button").click()
    progress = page.get_by_test_id("progress")
    await expect(progress.locator("li[data-pipe='echo'].running")).to_have_count(1, timeout=RUN_TIMEOUT_MS)
    cancel = page.get_by_test_id("cancel-button")
    await expect(cancel).to_be_enabled()
    await shot(page, screenshots, "06-running")
    await cancel.click()
    await expect(page.get_by_test_id("output-state")).to_have_text("CANCELLED", timeout=RUN_TIMEOUT_MS)
    await expect(page.get_by_test_id("output-error")).to_contain_text("run.cancelled")


async def test_document_input_by_upload_through_a_pdf_extract(page: Any, server: Any, tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_pdf("Quarterly report", "The code word is PELICAN."))
    await open_playground(page, server)
    await paste_and_validate(page, EXTRACT_ONLY_BUNDLE)
    await page.get_by_test_id("input-doc-file").set_input_files(str(pdf))
    await expect(page.get_by_test_id("input-doc-status")).to_contain_text("Uploaded report.pdf")
    await expect(page.get_by_test_id("input-doc-url")).to_have_value(re.compile(r"^pipelex-storage://"))
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    await expect(page.get_by_test_id("output-main")).to_contain_text("PELICAN")


async def test_api_key_mode_wrong_then_right_key(page: Any, keyed_server: Any, stub: Any, screenshots: Path) -> None:
    await open_playground(page, keyed_server)
    await page.get_by_test_id("auth-token").fill("not-the-key")
    await paste_and_validate(page, SEED_BUNDLE)
    await expect(page.get_by_test_id("verdict")).to_contain_text("401")
    await expect(page.locator("#notice")).to_contain_text("Paste a valid API key")
    await shot(page, screenshots, "08-wrong-key")
    await page.get_by_test_id("auth-token").fill(API_KEY)
    await page.get_by_test_id("validate-button").click()
    await expect(page.get_by_test_id("verdict-state")).to_have_text("Valid")
    await page.get_by_test_id("input-text").fill(SEED_TEXT)
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    # the key lives in the tab's sessionStorage, never in the URL
    assert await page.evaluate("sessionStorage.getItem('pipelex-playground-token')") == API_KEY
    assert API_KEY not in page.url
    await expect(page.get_by_test_id("curl-snippet")).to_contain_text("$PIPELEX_API_KEY")
    assert API_KEY not in await page.get_by_test_id("curl-snippet").text_content()


async def test_an_answer_holding_a_script_is_shown_as_text(page: Any, server: Any, stub: Any, screenshots: Path) -> None:
    await open_playground(page, server)
    await paste_and_validate(page, ECHO_BUNDLE)
    hostile = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    await page.get_by_test_id("input-text").fill(hostile)
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    text = page.get_by_test_id("output-text")
    await expect(text).to_contain_text("<script>window.pwned=1</script>")
    assert await page.get_by_test_id("output").locator("script, img").count() == 0
    assert await page.evaluate("window.pwned") is None
    await shot(page, screenshots, "09-escaped-output")


async def test_a_newcomer_on_a_keyless_server_gets_a_completed_run_of_the_readme_example(page: Any, keyless_server: Any) -> None:
    """The issue's "done when": `make serve` with no provider key, an empty page, two clicks, a completed run."""
    await open_playground(page, keyless_server)
    await expect(page.locator("#notice")).to_contain_text("runs are dry runs")
    await expect(page.get_by_test_id("dry-run-toggle")).to_be_checked()
    await page.get_by_test_id("example-button").click()
    await expect(page.get_by_test_id("input-text")).to_have_value(SEED_TEXT)
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    await expect(page.get_by_test_id("output")).to_contain_text("(dry run)")
