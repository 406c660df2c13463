"""OpenTelemetry traces, end to end: a real server process (and, in Temporal mode, a real worker process and Temporal
dev server) exporting over OTLP/HTTP to a real receiver on loopback. A request that carries a W3C ``traceparent``
gets one trace: the HTTP span continues it, and the run, pipe and inference spans share its trace id, across the
Temporal hop too; the completion callback carries the trace's ``traceparent``."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.support.bundles import SEED_BUNDLE, SEED_TEXT
from tests.support.otlp_receiver import OtlpReceiver, Span
from tests.support.receiver import Receiver
from tests.support.server import ServerProcess
from tests.support.temporal import TemporalDevServer, WorkerProcess

pytestmark = pytest.mark.slow

CALLBACK_SECRET = "tracing-callback-secret"


def traceparent() -> tuple[str, str, str]:
    """A caller's own trace: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def base_env(stub: Any, receiver: OtlpReceiver, workdir: Path) -> dict[str, str]:
    return {
        **receiver.env(),
        "OPENAI_BASE_URL": stub.base_url,
        "DATA_DIR": str(workdir / "data"),
        "COMPLETION_CALLBACK_SECRET": CALLBACK_SECRET,
        "CALLBACK_ALLOW_PRIVATE_HOSTS": "true",
        "CALLBACK_BACKOFF_SECONDS": "0.2",
        "SHUTDOWN_GRACE_SECONDS": "2",
    }


def names(spans: list[Span]) -> set[str]:
    return {span.name for span in spans}


def complete_run(trace_id: str, *, callback: bool) -> Any:
    """A predicate: the trace holds the request's span, a run span, its pipe span, an inference span (and a callback
    span)."""

    def holds(spans: list[Span]) -> bool:
        mine = [span for span in spans if span.trace_id == trace_id]
        found = names(mine)
        has_request = any(span.kind == "SERVER" for span in mine)
        return (
            has_request
            and "run summarize" in found
            and "pipe summarize" in found
            and any(n.startswith("chat ") for n in found)
            and (not callback or "callback" in found)
        )

    return holds


def check_run_trace(spans: list[Span], trace_id: str, *, run_service: str) -> dict[str, Span]:
    """The run's spans form one tree under the caller's trace: HTTP span → (…) → run → pipe → inference call."""
    mine = [span for span in spans if span.trace_id == trace_id]
    by_id = {span.span_id: span for span in mine}
    run = next(span for span in mine if span.name == "run summarize")
    pipe = next(span for span in mine if span.name == "pipe summarize")
    llm = next(span for span in mine if span.name.startswith("chat "))
    assert run.service == run_service
    assert run.attributes["pipelex.run.state"] == "COMPLETED"
    assert run.attributes["pipelex.run.pipe_code"] == "summarize"
    assert pipe.parent_span_id == run.span_id
    assert pipe.attributes["pipelex.pipe.code"] == "summarize"
    assert pipe.attributes["pipelex.pipe.type"] == "PipeLLM"
    assert pipe.attributes["pipelex.pipe.output_concept"]
    assert llm.parent_span_id == pipe.span_id
    assert llm.kind == "CLIENT"
    assert llm.attributes["gen_ai.system"] == "openai"
    assert llm.attributes["gen_ai.request.model"]
    assert llm.attributes["gen_ai.usage.input_tokens"] > 0
    assert llm.attributes["gen_ai.usage.output_tokens"] > 0
    assert pipe.start_ns <= llm.start_ns <= llm.end_ns <= pipe.end_ns
    # every span of the trace hangs, through its parents, from the caller's own span
    for span in mine:
        ancestor = span
        while ancestor.parent_span_id in by_id:
            ancestor = by_id[ancestor.parent_span_id]
        assert ancestor.kind == "SERVER" and ancestor.service == "pipelex-server", (span.name, ancestor.name)
    return {"run": run, "pipe": pipe, "llm": llm}


def check_callback(delivery: Any, spans: list[Span], trace_id: str) -> None:
    version, header_trace, header_span, _flags = delivery.headers["traceparent"].split("-")
    assert (version, header_trace) == ("00", trace_id)
    callback = next(span for span in spans if span.trace_id == trace_id and span.name == "callback")
    assert callback.span_id == header_span  # the receiver can continue the trace from the attempt's own span
    assert callback.attributes["http.response.status_code"] == 200


def test_execute_is_one_trace_continuing_the_callers_traceparent(stub: Any, tmp_path: Path) -> None:
    header, trace_id, caller_span = traceparent()
    with OtlpReceiver() as receiver, ServerProcess(tmp_path, env=base_env(stub, receiver, tmp_path)) as server, server.client() as client:
        response = client.post(
            "/api/v1/pipeline/execute",
            json={"pipe_code": "summarize", "mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}},
            headers={"traceparent": header},
        )
        assert response.status_code == 200, response.text
        spans = receiver.wait_for(complete_run(trace_id, callback=False))
        servers = [span for span in spans if span.trace_id == trace_id and span.kind == "SERVER"]
        assert len(servers) == 1  # ours only: the framework's own request span is off
        http = servers[0]
        assert http.parent_span_id == caller_span
        assert http.name == "POST /api/v1/pipeline/execute"
        assert http.attributes["http.route"] == "/api/v1/pipeline/execute"
        assert http.attributes["http.response.status_code"] == 200
        assert http.attributes["pipelex.request_id"] == response.headers["x-request-id"]
        found = check_run_trace(spans, trace_id, run_service="pipelex-server")
        assert found["run"].parent_span_id == http.span_id
        # a request without a valid traceparent starts a trace of its own
        assert client.get("/health", headers={"traceparent": "00-not-a-trace-01"}).status_code == 200
        own = receiver.wait_for(lambda spans: any(span.name == "GET /health" for span in spans))
        health = next(span for span in own if span.name == "GET /health")
        assert health.trace_id != trace_id and health.parent_span_id == ""
        # a run whose LLM call fails: its run and pipe spans say so, with the problem's code
        marker = f"FAIL-{secrets.token_hex(4)}"
        stub.configure(fail={"status": 400, "match": marker, "count": None})
        failing, failed_trace, _ = traceparent()
        body = {"pipe_code": "summarize", "mthds_contents": [SEED_BUNDLE], "inputs": {"text": marker}}
        answer = client.post("/api/v1/pipeline/execute", json=body, headers={"traceparent": failing})
        assert answer.status_code >= 400
        code = answer.json()["code"]
        spans = receiver.wait_for(
            lambda spans: {"run summarize", "pipe summarize"} <= names([s for s in spans if s.trace_id == failed_trace])
        )
        failed = {span.name: span for span in spans if span.trace_id == failed_trace}
        assert failed["run summarize"].attributes["pipelex.run.state"] == "FAILED"
        assert failed["run summarize"].attributes["pipelex.error.code"] == code
        assert failed["run summarize"].status_code == failed["pipe summarize"].status_code == 2  # ERROR
        assert failed["pipe summarize"].attributes["pipelex.error.code"]
        assert not any(name.startswith("chat ") for name in failed)  # a call that failed reported no usage: no span


def test_start_with_a_callback_in_process(stub: Any, tmp_path: Path) -> None:
    header, trace_id, _caller_span = traceparent()
    with OtlpReceiver() as receiver, Receiver() as hook, ServerProcess(tmp_path, env=base_env(stub, receiver, tmp_path)) as server:
        client = server.client()
        body = {"pipe_code": "summarize", "mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}, "callback_urls": [hook.url]}
        response = client.post("/api/v1/pipeline/start", json=body, headers={"traceparent": header})
        assert response.status_code == 202, response.text
        delivery = hook.wait_for(1)[0]
        spans = receiver.wait_for(complete_run(trace_id, callback=True))
        check_run_trace(spans, trace_id, run_service="pipelex-server")
        check_callback(delivery, spans, trace_id)
        run = next(span for span in spans if span.trace_id == trace_id and span.name == "run summarize")
        callback = next(span for span in spans if span.trace_id == trace_id and span.name == "callback")
        assert callback.parent_span_id == run.span_id


@pytest.mark.temporal
def test_a_temporal_run_continues_the_trace_in_the_worker(stub: Any, tmp_path: Path) -> None:
    header, trace_id, _caller_span = traceparent()
    with OtlpReceiver() as receiver, Receiver() as hook, TemporalDevServer(tmp_path / "temporal") as temporal:
        env = {**base_env(stub, receiver, tmp_path), **temporal.env(), "SINGLE_HOST": "true"}
        worker = WorkerProcess(tmp_path / "worker", env=env).start()
        try:
            with ServerProcess(tmp_path / "api", env=env) as server, server.client() as client:
                body = {
                    "pipe_code": "summarize",
                    "mthds_contents": [SEED_BUNDLE],
                    "inputs": {"text": SEED_TEXT},
                    "callback_urls": [hook.url],
                }
                response = client.post("/api/v1/pipeline/start", json=body, headers={"traceparent": header})
                assert response.status_code == 202, response.text
                delivery = hook.wait_for(1)[0]
                spans = receiver.wait_for(complete_run(trace_id, callback=True))
        finally:
            worker.stop()
    found = check_run_trace(spans, trace_id, run_service="pipelex-server-worker")
    check_callback(delivery, spans, trace_id)
    services = {span.service for span in spans if span.trace_id == trace_id}
    assert services == {"pipelex-server", "pipelex-server-worker"}
    # the hop: the API's workflow start, the workflow and its activity in the worker, then the run
    hop = names([span for span in spans if span.trace_id == trace_id])
    assert {"StartWorkflow:PipelexRun", "RunWorkflow:PipelexRun", "RunActivity:pipelex_server.execute_run"} <= hop
    by_id = {span.span_id: span for span in spans}
    assert by_id[found["run"].parent_span_id].name == "RunActivity:pipelex_server.execute_run"


def test_a_sequence_with_a_fetched_document_traces_its_steps_fetch_and_storage(stub: Any, tmp_path: Path) -> None:
    from tests.api.test_documents import PDF_BUNDLE, document_input, make_pdf
    from tests.support.fileserver import FileServer

    header, trace_id, _caller_span = traceparent()
    env = {"FETCH_ALLOW_PRIVATE_HOSTS": "true"}
    with FileServer() as files, OtlpReceiver() as receiver:
        files.add("/report.pdf", make_pdf("Quarterly report"), "application/pdf")
        with ServerProcess(tmp_path, env={**base_env(stub, receiver, tmp_path), **env}) as server, server.client() as client:
            body = {"mthds_contents": [PDF_BUNDLE], "inputs": document_input(files.url("/report.pdf"))}
            response = client.post("/api/v1/pipeline/execute", json=body, headers={"traceparent": header})
            assert response.status_code == 200, response.text

            def complete(spans: list[Span]) -> bool:
                found = names([span for span in spans if span.trace_id == trace_id])
                return {"POST /api/v1/pipeline/execute", "run", "pipe summarize_pdf", "pipe read_pages", "pipe summarize", "fetch"} <= found

            spans = receiver.wait_for(complete)
    mine = {span.span_id: span for span in spans if span.trace_id == trace_id}
    by_name = {span.name: span for span in mine.values()}
    sequence, read, summarize = by_name["pipe summarize_pdf"], by_name["pipe read_pages"], by_name["pipe summarize"]
    assert sequence.attributes["pipelex.pipe.type"] == "PipeSequence"
    assert read.parent_span_id == sequence.span_id and summarize.parent_span_id == sequence.span_id
    assert read.attributes["pipelex.pipe.type"] == "PipeExtract"
    assert by_name["pipe summarize"].end_ns <= sequence.end_ns
    chat = next(span for span in mine.values() if span.name.startswith("chat "))
    assert chat.parent_span_id == summarize.span_id
    fetch = by_name["fetch"]
    assert fetch.attributes["server.address"] == "127.0.0.1"
    assert fetch.attributes["pipelex.fetch.outcome"] == "ok"
    assert "report.pdf" not in str(fetch.attributes)  # the host only: a URL's path and query stay out of traces
    stored = [span for span in mine.values() if span.name == "storage put"]
    assert stored and all(span.attributes["pipelex.storage.backend"] == "local" for span in stored)


def test_spans_still_buffered_are_exported_when_the_server_stops(stub: Any, tmp_path: Path) -> None:
    header, trace_id, _caller_span = traceparent()
    with OtlpReceiver() as receiver:
        env = {**base_env(stub, receiver, tmp_path), "OTEL_BSP_SCHEDULE_DELAY": "600000"}  # no export before the stop
        with ServerProcess(tmp_path, env=env) as server, server.client() as client:
            body = {"pipe_code": "summarize", "mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}}
            assert client.post("/api/v1/pipeline/execute", json=body, headers={"traceparent": header}).status_code == 200
            assert receiver.of_trace(trace_id) == []
            server.stop()  # SIGTERM: the app's shutdown flushes the batch (uvicorn then ends the process by the signal)
        receiver.wait_for(complete_run(trace_id, callback=False), timeout=10)
