"""The tracing switch: which OTEL_* variables turn traces on, what is refused, and that a process without them
installs nothing (no SDK tracer provider, no middleware, hooks that return at once)."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from pipelex_server.errors import ConfigurationError
from pipelex_server.observability import tracing
from pipelex_server.observability.tracing_http import TracingMiddleware

ENDPOINT = "http://collector:4318"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "api"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, True),
    ],
)
def test_which_variables_turn_tracing_on(environ: dict[str, str], on: bool) -> None:
    assert tracing.tracing_requested(environ) is on


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_TRACES_EXPORTER": "otlp,jaeger"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
    ],
)
def test_an_exporter_the_server_cannot_serve_is_refused_at_boot(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="OTEL_"):
        tracing.tracing_requested(environ)


async def test_off_by_default_nothing_is_installed(session_app) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    # the test process has no OTEL_* variables: its app was built with tracing off
    assert tracing.STATE.configured and not tracing.STATE.enabled
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert all(middleware.cls is not TracingMiddleware for middleware in session_app.app.user_middleware)
    assert tracing.temporal_interceptors() == []
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {}


def test_serve_refuses_an_exporter_it_cannot_serve_before_it_binds(tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "DO_NOT_TRACK": "1", "DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "pipelex_server.cli", "serve"],
        env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "configuration error: OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in result.stderr
