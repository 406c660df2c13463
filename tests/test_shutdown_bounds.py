"""A shutdown step that never ends is abandoned at its bound, named in the log with what was still pending."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pipelex_server.composition import _bounded


async def test_a_step_past_its_bound_is_abandoned_and_logged_with_the_pending_tasks(caplog: pytest.LogCaptureFixture) -> None:
    never = asyncio.Event()

    async def stuck_background() -> None:
        await never.wait()

    background = asyncio.create_task(stuck_background(), name="stuck-background")
    caplog.set_level(logging.ERROR, logger="pipelex_server.composition")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _bounded("the stuck step", never.wait(), 0.2)
    assert loop.time() - started < 2
    [record] = [record for record in caplog.records if "the stuck step" in record.getMessage()]
    assert "stuck_background" in record.getMessage()  # the pending task's stack names what it waits in
    background.cancel()


async def test_a_step_within_its_bound_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pipelex_server.composition")
    await _bounded("a quick step", asyncio.sleep(0), 5)
    assert not [record for record in caplog.records if "a quick step" in record.getMessage()]
