"""`pipelex-server serve` stops at once, with a clear message and exit code 2, when its object storage or Temporal
cannot be used; nothing binds."""

from __future__ import annotations

import pytest

from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.slow


def exits_with(server: ServerProcess, timeout: float = 60) -> tuple[int, str]:
    server.start(wait_ready=False)
    assert server.process is not None
    code = server.process.wait(timeout)
    return code, server.log()


def test_unreachable_temporal_stops_the_boot(tmp_path):
    env = {"EXECUTION_MODE": "temporal", "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "SINGLE_HOST": "true"}
    code, log = exits_with(ServerProcess(tmp_path, env=env))
    assert code == 2, log
    assert "cannot reach Temporal" in log
    assert "Traceback" not in log


def test_an_unusable_bucket_stops_the_boot(tmp_path, s3_server):
    env = {**s3_server.env(), "S3_BUCKET": "no-such-bucket-anywhere"}
    code, log = exits_with(ServerProcess(tmp_path, env=env))
    assert code == 2, log
    assert "object storage (s3) cannot be used" in log
    assert s3_server.secret_key not in log
