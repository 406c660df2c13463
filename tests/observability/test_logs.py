"""LOG_FORMAT=json: every line a real server writes (uvicorn's, the server's, the runtime's) is one JSON object of one
schema, carrying the request id, the run id and the caller; no query string, input or prompt unless LOG_PAYLOADS."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from pipelex_server.observability import logs
from tests.support.bundles import SEED_TEXT, seed_request
from tests.support.server import ServerProcess

EXECUTE = "/api/v1/pipeline/execute"
REQUIRED = ("time", "severity", "logger", "message")


def _lines(text: str) -> list[dict]:
    parsed = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)  # raises on any line that is not JSON
            assert isinstance(record, dict), line
            assert all(key in record for key in REQUIRED), line
            parsed.append(record)
    return parsed


@pytest.mark.slow
def test_every_line_of_a_json_server_is_one_object_with_the_ids(tmp_path, stub):
    env = {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": stub.base_url,
        "LOG_FORMAT": "json",
        "RUNTIME_LOG_LEVEL": "INFO",  # the runtime's per-pipe lines too
    }
    with ServerProcess(tmp_path, env=env, args=("--workers", "2")) as server, server.client() as http:
        response = http.post(EXECUTE + "?note=query-secret-xyz", json=seed_request(), headers={"X-Request-ID": "log-test-request-1"})
        assert response.status_code == 200, response.text
        run_id = response.json()["pipeline_run_id"]
    records = _lines(server.log())
    loggers = {record["logger"] for record in records}
    assert {"uvicorn.error", "uvicorn.access", "pipelex_server.engine.runtime"} <= loggers
    assert any(name.startswith("pipelex.") for name in loggers)
    assert any(record["message"].startswith("Started server process") for record in records)

    (access,) = [record for record in records if record["logger"] == "uvicorn.access" and record.get("request_id") == "log-test-request-1"]
    assert access["method"] == "POST" and access["path"] == EXECUTE and access["status"] == 200
    runtime_lines = [record for record in records if record["logger"].startswith("pipelex.") and record.get("run_id") == run_id]
    assert runtime_lines, "the runtime's lines of the run carry its id"
    assert all(record["request_id"] == "log-test-request-1" and record["caller"] == "shared" for record in runtime_lines)
    log = server.log()
    assert "query-secret-xyz" not in log
    assert SEED_TEXT not in log and "sk-test" not in log


@pytest.mark.slow
def test_log_payloads_keeps_the_query_string(tmp_path, stub):
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": stub.base_url, "LOG_FORMAT": "json", "LOG_PAYLOADS": "true"}
    with ServerProcess(tmp_path, env=env) as server, server.client() as http:
        assert http.get("/health?probe=visible-abc").status_code == 200
    (access,) = [record for record in _lines(server.log()) if record.get("path", "").startswith("/health?")]
    assert access["path"] == "/health?probe=visible-abc"


def test_a_record_under_a_span_carries_its_trace_id_and_the_bound_ids():
    formatter = logs.JsonFormatter()
    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=False, trace_flags=TraceFlags(1)
    )

    def render() -> dict:
        record = logging.LogRecord("pipelex_server.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
        return json.loads(formatter.format(record))

    import contextvars

    def inside() -> dict:
        logs.bind_request("req-1")
        logs.bind_run("run-1", "alice")
        with trace.use_span(NonRecordingSpan(context)):
            return render()

    line = contextvars.copy_context().run(inside)
    assert line["message"] == "hello world"
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["span_id"] == "b7ad6b7169203331"
    assert (line["request_id"], line["run_id"], line["caller"]) == ("req-1", "run-1", "alice")
    outside = render()  # no span, no ids: the keys are absent, not null
    assert set(outside) == {"time", "severity", "logger", "message"}


def test_text_lines_drop_the_query_string_and_append_the_bound_ids():
    import contextvars

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5000", "GET", "/x?sig=secret", "1.1", 200), None
    )

    def inside() -> str:
        logs.bind_request("req-9")
        return logs.TextFormatter().format(record)

    line = contextvars.copy_context().run(inside)
    assert '"GET /x HTTP/1.1" 200' in line and "secret" not in line
    assert line.endswith("[request_id=req-9]")
    assert "sig=secret" in logs.TextFormatter(payloads=True).format(record)


def test_an_unknown_log_format_stops_the_boot():
    from pipelex_server.errors import ConfigurationError
    from pipelex_server.settings import load_settings

    with pytest.raises(ConfigurationError, match="log_format"):
        load_settings(log_format="xml")
