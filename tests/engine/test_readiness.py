"""Engine readiness before, during and after the boot: the bounded wait, its 503, and checks that are safe before it."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import textwrap

import pytest

from pipelex_server.engine.runtime import Engine
from pipelex_server.errors import ApiProblem
from pipelex_server.settings import Settings
from tests.support.server import REPO_ROOT


def _engine(tmp_path, **settings: object) -> Engine:
    # never started: store and fetcher are not touched before the boot
    return Engine(Settings(data_dir=tmp_path, **settings), store=None, fetcher=None)  # type: ignore[arg-type]


async def test_a_boot_in_progress_is_waited_for_up_to_ready_wait_seconds(tmp_path):
    engine = _engine(tmp_path, ready_wait_seconds=0.05)
    assert engine.readiness.status == "starting"
    with pytest.raises(ApiProblem) as caught:
        await engine.wait_ready()
    problem = caught.value
    assert (problem.status, problem.code) == (503, "server.not_ready")
    assert int(problem.headers["Retry-After"]) > 0
    assert "still starting" in problem.detail


async def test_a_waiting_request_proceeds_as_soon_as_the_boot_ends(tmp_path):
    engine = _engine(tmp_path)  # READY_WAIT_SECONDS: 30 by default
    waiter = asyncio.create_task(engine.wait_ready())
    unbounded = asyncio.create_task(engine.wait_ready(timeout=math.inf))
    await asyncio.sleep(0)
    assert not waiter.done() and not unbounded.done()
    engine.readiness.succeeded()
    await asyncio.wait_for(asyncio.gather(waiter, unbounded), 5)
    assert engine.readiness.status == "ok"


async def test_a_failed_boot_is_503_at_once_and_names_its_reason_only_in_the_status(tmp_path):
    engine = _engine(tmp_path, ready_wait_seconds=30)
    waiter = asyncio.create_task(engine.wait_ready())
    await asyncio.sleep(0)
    engine.readiness.failed(RuntimeError("no backend here\nsecond line"))
    with pytest.raises(ApiProblem) as caught:
        await asyncio.wait_for(waiter, 5)
    assert caught.value.code == "server.not_ready" and "failed to boot" in caught.value.detail
    assert "no backend" not in caught.value.detail
    assert engine.readiness.status == "failing: boot error: RuntimeError: no backend here"
    with pytest.raises(ApiProblem):
        await engine.wait_ready(timeout=0)
    assert engine.boot_error is not None and engine.ready.is_set()


async def test_the_test_hooks_delay_then_fail_the_boot(tmp_path):
    engine = _engine(tmp_path, pipelex_server_test_boot_delay_seconds=0.2, pipelex_server_test_boot_failure="made to fail")
    boot = asyncio.create_task(engine.start())
    with pytest.raises(ApiProblem):
        await engine.wait_ready(timeout=0.05)  # still in the delay
    await asyncio.wait_for(boot, 5)
    assert engine.readiness.status == "failing: boot error: RuntimeError: made to fail"
    engine.stop()  # nothing was acquired: a no-op


def test_refusing_an_unconfigured_live_run_never_touches_the_runtime_before_the_boot(tmp_path):
    # in a fresh interpreter, so that "pipelex is not imported" means something
    script = textwrap.dedent(
        f"""
        import os, sys
        from pipelex_server.engine.runtime import Engine
        from pipelex_server.errors import ApiProblem
        from pipelex_server.settings import Settings

        os.environ.pop("OPENAI_API_KEY", None)
        keyless = Engine(Settings(data_dir={str(tmp_path)!r}), store=None, fetcher=None)
        try:
            keyless.refuse_live_if_unconfigured()
            raise SystemExit("a keyless plan accepted a live run")
        except ApiProblem as problem:
            assert problem.code == "inference.not_configured", problem.code
        os.environ["OPENAI_API_KEY"] = "sk-test"
        Engine(Settings(data_dir={str(tmp_path)!r}), store=None, fetcher=None).refuse_live_if_unconfigured()
        assert not any(name == "pipelex" or name.startswith("pipelex.") for name in sys.modules), "pipelex was imported"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
