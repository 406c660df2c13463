"""The playground in a real Chromium: method folders, nested and list inputs, large graphs, output types, callbacks,
keyboard use, narrow and dark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.playground.steps import (
    ECHO_BUNDLE,
    RUN_TIMEOUT_MS,
    STRUCTURED_INPUT_BUNDLE,
    expect,
    long_sequence,
    open_playground,
    paste_and_validate,
    run_and_wait,
    shot,
)
from tests.support.bundles import BATCH_BUNDLE, METHODS_DIR, SEED_TEXT, STRUCTURED_BUNDLE
from tests.support.receiver import Receiver

pytestmark = pytest.mark.slow


async def test_narrow_and_dark(page: Any, server: Any, screenshots: Path) -> None:
    await page.set_viewport_size({"width": 420, "height": 900})
    await open_playground(page, server)
    await page.locator("#theme-toggle").click()
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    await page.get_by_test_id("example-button").click()
    await expect(page.get_by_test_id("verdict-state")).to_have_text("Valid")
    # one column: the inputs come below the method, not beside it
    method_box = await page.get_by_test_id("bundle-editor").bounding_box()
    form_box = await page.get_by_test_id("inputs-form").bounding_box()
    assert form_box["y"] > method_box["y"] + method_box["height"]
    await shot(page, screenshots, "10-narrow-dark")


async def test_open_a_method_folder_sends_its_tree_as_files(page: Any, server: Any, stub: Any) -> None:
    await open_playground(page, server)
    await page.locator("#open-folder").set_input_files(str(METHODS_DIR / "menu_package"))
    await expect(page.get_by_test_id("verdict-state")).to_have_text("Valid")
    files = page.get_by_test_id("file-select")
    await expect(files).to_be_visible()
    await expect(files.locator("option")).to_have_text(["METHODS.toml", "README.md", "drafting/dishes.mthds", "kitchen/menu.mthds"])
    request = await page.get_by_test_id("request-json").input_value()
    assert '"files"' in request and '"kitchen/menu.mthds"' in request and "mthds_contents" not in request
    await page.get_by_test_id("input-note").fill("fennel")
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    await expect(page.get_by_test_id("output-text")).to_contain_text("KITCHEN write a menu card")


async def test_structured_and_list_inputs_as_nested_fields(page: Any, server: Any, stub: Any) -> None:
    await open_playground(page, server)
    await paste_and_validate(page, STRUCTURED_INPUT_BUNDLE)
    await page.get_by_test_id("input-subject.name").fill("Grace")
    await page.get_by_test_id("input-subject.age").fill("85")
    request = await page.get_by_test_id("request-json").input_value()
    assert '"content": {\n        "name": "Grace",\n        "age": 85' in request
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-text")).to_contain_text("DESCRIBE Grace aged 85")

    await paste_and_validate(page, BATCH_BUNDLE)
    crates = page.get_by_test_id("input-crates")
    await expect(crates.locator(".list-item")).to_have_count(1)
    await page.get_by_test_id("input-crates-add").click()
    await page.get_by_test_id("input-crates-add").click()
    await page.get_by_test_id("input-crates-remove-2").click()
    await expect(crates.locator(".list-item")).to_have_count(2)
    await page.get_by_test_id("input-crates.0").fill("apples")
    await page.get_by_test_id("input-crates.1").fill("pears")
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    await expect(page.get_by_test_id("output-main").locator("li")).to_have_count(2)


async def test_a_twenty_pipe_graph_is_drawn_without_overlaps(page: Any, server: Any, screenshots: Path) -> None:
    await open_playground(page, server)
    await paste_and_validate(page, long_sequence(20))
    await expect(page.get_by_test_id("verdict-state")).to_have_text("Valid")
    nodes = page.get_by_test_id("graph").locator("svg g.node rect")
    await expect(nodes).to_have_count(21)
    boxes = [await nodes.nth(index).bounding_box() for index in range(21)]
    for index, first in enumerate(boxes):
        for second in boxes[index + 1 :]:
            apart = (first["x"] + first["width"] <= second["x"] or second["x"] + second["width"] <= first["x"]
                     or first["y"] + first["height"] <= second["y"] or second["y"] + second["height"] <= first["y"])  # fmt: skip
            assert apart, (first, second)
    await shot(page, screenshots, "11-twenty-pipes")


async def test_edited_request_json_callbacks_and_redelivery(page: Any, server: Any, stub: Any) -> None:
    with Receiver() as receiver:
        await open_playground(page, server)
        await page.get_by_test_id("example-button").click()
        await expect(page.get_by_test_id("input-text")).to_have_value(SEED_TEXT)
        await page.get_by_text("Request JSON (editable)").click()
        editor = page.get_by_test_id("request-json")
        body = json.loads(await editor.input_value())
        body["callback_urls"] = [receiver.url]
        await editor.fill(json.dumps(body, indent=2))
        await run_and_wait(page)
        await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
        assert len(receiver.wait_for(1)) == 1

        await page.locator("#tab-history").click()
        await page.get_by_test_id("run-row").first.click()
        table = page.get_by_test_id("run-detail").locator("table.callbacks")
        await expect(table).to_contain_text(receiver.url)
        await expect(page.locator("#detail-redeliver")).to_be_enabled()
        await page.locator("#detail-redeliver").click()
        await expect(page.locator("#notice")).to_contain_text("Callbacks queued")
        assert len(receiver.wait_for(2)) == 2


async def test_keyboard_only_from_an_empty_page_to_a_dry_run(page: Any, server: Any) -> None:
    await open_playground(page, server)

    async def tab_to(testid: str) -> None:
        for _ in range(40):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement?.dataset?.testid") == testid:
                return
        raise AssertionError(f"Tab never reached {testid}")

    await tab_to("example-button")
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("input-text")).to_have_value(SEED_TEXT)
    await tab_to("dry-run-toggle")
    await page.keyboard.press("Space")
    await expect(page.get_by_test_id("dry-run-toggle")).to_be_checked()
    await tab_to("run-button")
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED", timeout=RUN_TIMEOUT_MS)


async def test_output_by_type_markdown_and_json_tree(page: Any, server: Any, stub: Any) -> None:
    await open_playground(page, server)
    await paste_and_validate(page, ECHO_BUNDLE)
    await page.get_by_test_id("input-text").fill("**bold** and `code`")
    await run_and_wait(page)
    main = page.get_by_test_id("output-main")
    await expect(main.get_by_test_id("output-text")).to_contain_text("**bold** and `code`")  # text first
    await main.get_by_role("button", name="Show as markdown").click()
    await expect(main.locator(".markdown strong")).to_have_text("bold")
    await expect(main.locator(".markdown code")).to_have_text("code")
    await expect(main.get_by_test_id("output-text")).to_be_hidden()

    await paste_and_validate(page, STRUCTURED_BUNDLE)
    await page.get_by_test_id("input-text").fill("Ada Lovelace, 36, ada@example.com")
    await run_and_wait(page)
    await expect(page.get_by_test_id("output-state")).to_have_text("COMPLETED")
    tree = page.get_by_test_id("output-main").locator(".json-tree")
    await expect(tree).to_contain_text('name: "stub-name"')
    await expect(tree).to_contain_text("age: 1")
    memory = page.get_by_test_id("working-memory")
    await memory.locator("summary").first.click()
    await expect(memory).to_contain_text("text · native.Text")


async def test_the_highlighter_tokenizes_tables_keys_strings_and_comments(page: Any, server: Any) -> None:
    await open_playground(page, server)
    source = 'domain = "x"  # the domain\n[pipe.a]\nprompt = """\nline one\n# not a comment\n"""\ninputs = { text = "Text" }\nn = 3\n'
    tokens = await page.evaluate("async (source) => (await import('/playground/static/js/editor.js')).tokenize(source)", source)
    assert "".join(text for _, text in tokens) == source  # nothing lost or added
    classed = {(cls, text) for cls, text in tokens if cls}
    assert ("tok-key", "domain") in classed and ("tok-str", '"x"') in classed
    assert ("tok-com", "# the domain") in classed and ("tok-table", "[pipe.a]") in classed
    assert ("tok-str", '"""\nline one\n# not a comment\n"""') in classed  # a multi-line string holds its "comment"
    assert ("tok-key", "text") in classed and ("tok-str", '"Text"') in classed and ("tok-num", "3") in classed
