"""The boot runs with the collector off (its million long-lived objects are frozen at its end, boot_gc.py) and
leaves it on, whether the boot succeeds or fails."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from pipelex_server.engine.runtime import Engine
from pipelex_server.fetch import Fetcher
from pipelex_server.settings import Settings
from pipelex_server.storage.local import LocalObjectStore


def _engine(base_settings: dict[str, Any], tmp_path: Path, **overrides: Any) -> Engine:
    settings = Settings(**{**base_settings, "data_dir": tmp_path, **overrides})
    fetcher = Fetcher(allow_private=False, max_bytes=1 << 20, timeout_seconds=10)
    return Engine(settings, store=LocalObjectStore(tmp_path / "storage"), fetcher=fetcher)


async def test_a_boot_leaves_the_collector_on(session_app, base_settings, tmp_path):
    engine = _engine(base_settings, tmp_path)
    await engine.start()  # joins the session's runtime
    try:
        assert engine.boot_error is None and gc.isenabled()
    finally:
        engine.stop()


async def test_a_failed_boot_leaves_the_collector_on(session_app, base_settings, tmp_path):
    engine = _engine(base_settings, tmp_path, pipelex_server_test_boot_failure="boot refused by the test")
    await engine.start()
    assert str(engine.boot_error) == "boot refused by the test" and gc.isenabled()


async def test_a_boot_leaves_a_collector_it_found_off_as_it_was(session_app, base_settings, tmp_path):
    engine = _engine(base_settings, tmp_path)
    gc.disable()
    try:
        await engine.start()
        assert not gc.isenabled()
    finally:
        gc.enable()
        engine.stop()


async def test_after_the_boot_young_objects_are_collected_at_the_steady_state_pace(session_app):
    from pipelex_server.boot_gc import YOUNG_THRESHOLD

    # the session's runtime booted (session_app): its objects are frozen and the young generation's threshold raised
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD and gc.get_freeze_count() > 0
