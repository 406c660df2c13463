"""Steps and methods the browser tests share: open the page, validate a pasted method, run and wait, screenshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from playwright.async_api import expect
except ImportError:  # the browser fixture skips (or fails under PIPELEX_SERVER_REQUIRE_BROWSER=1)
    expect = None

RUN_TIMEOUT_MS = 60_000
ECHO_BUNDLE = """domain = "echo"
main_pipe = "echo"

[pipe.echo]
type = "PipeLLM"
description = "Answer with the text itself"
inputs = { text = "Text" }
output = "Text"
prompt = "$text"
"""
STRUCTURED_INPUT_BUNDLE = """domain = "people"
main_pipe = "describe"

[concept.Person]
description = "A person"

[concept.Person.structure]
name = { type = "text", description = "Full name", required = true }
age = { type = "integer", description = "Age in years", required = true }

[pipe.describe]
type = "PipeLLM"
description = "Describe a person"
inputs = { subject = "Person" }
output = "Text"
prompt = "DESCRIBE $subject.name aged $subject.age"
"""


def long_sequence(steps: int) -> str:
    """A method of `steps` chained PipeLLMs under one PipeSequence."""
    lines = ['domain = "chain"', 'main_pipe = "chain"', "", "[pipe.chain]", 'type = "PipeSequence"', 'description = "A long chain"']
    lines += ['inputs = { text_0 = "Text" }', 'output = "Text"', "steps = ["]
    lines += [f'  {{ pipe = "step_{index}", result = "text_{index + 1}" }},' for index in range(steps)]
    lines.append("]")
    for index in range(steps):
        lines += ["", f"[pipe.step_{index}]", 'type = "PipeLLM"', f'description = "Step {index}"']
        lines += [f'inputs = {{ text_{index} = "Text" }}', 'output = "Text"', f'prompt = "STEP{index}: $text_{index}"']
    return "\n".join(lines) + "\n"


SLOW_BUNDLE = ECHO_BUNDLE.replace('prompt = "$text"', 'prompt = "SLOW-MARKER $text"')


async def open_playground(page: Any, server: Any) -> None:
    await page.goto(f"{server.url}/playground")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")


async def paste_and_validate(page: Any, bundle: str) -> None:
    await page.get_by_test_id("bundle-editor").fill(bundle)
    await page.get_by_test_id("validate-button").click()
    await expect(page.get_by_test_id("verdict-state")).to_be_visible()


async def run_and_wait(page: Any) -> None:
    await page.get_by_test_id("run-button").click()
    await expect(page.get_by_test_id("output-state")).to_be_visible(timeout=RUN_TIMEOUT_MS)


async def shot(page: Any, screenshots: Path, name: str) -> None:
    await page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)
