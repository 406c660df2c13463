"""Browser fixtures: Playwright driving the distribution's Chromium (never a downloaded browser) against a real server.

Without Chromium (or the playwright package) the browser tests are skipped, or fail under
PIPELEX_SERVER_REQUIRE_BROWSER=1 (CI). Screenshots go to PLAYGROUND_SCREENSHOTS_DIR when set (docs/images/playground
for the docs), else to a temporary directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess

API_KEY = "playground-test-key-0123456789"
VIEWPORT = {"width": 1280, "height": 800}


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or (shutil.which("chromium-browser"))


def _no_browser(reason: str) -> None:
    message = f"playground browser tests NOT RUN: {reason}"
    if os.environ.get("PIPELEX_SERVER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message} (PIPELEX_SERVER_REQUIRE_BROWSER=1)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    executable = chromium_path()
    if executable is None:
        _no_browser("no chromium on the PATH (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install -e '.[dev]')")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport=VIEWPORT, color_scheme="light")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" and "401" not in message.text else None)
    page.errors = errors
    try:
        yield page
    finally:
        await context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("PLAYGROUND_SCREENSHOTS_DIR")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("playground-screens")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[ServerProcess]:
    """A real server (AUTH_MODE=none) whose live runs reach the stub LLM, and whose callbacks may reach loopback."""
    env = {
        "OPENAI_BASE_URL": stub.base_url,
        "OPENAI_API_KEY": "sk-stub",
        "CALLBACK_ALLOW_PRIVATE_HOSTS": "true",
        "COMPLETION_CALLBACK_SECRET": "playground-callback-secret",
    }
    with ServerProcess(tmp_path_factory.mktemp("playground"), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[ServerProcess]:
    env = {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "sk-stub", "AUTH_MODE": "api_key", "API_KEY": API_KEY}
    with ServerProcess(tmp_path_factory.mktemp("playground-keyed"), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def keyless_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server as `make serve` starts it on a fresh machine: no provider key, so dry runs only."""
    with ServerProcess(tmp_path_factory.mktemp("playground-keyless")) as process:
        yield process
