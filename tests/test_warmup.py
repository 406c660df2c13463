"""Warm-up and readiness over real server processes: between the first /health 200 and a ready runtime, and after a
failed boot, every route that needs the runtime waits (READY_WAIT_SECONDS) or answers 503 server.not_ready with
Retry-After; never a 500. The boot window is widened with the test-only PIPELEX_SERVER_TEST_BOOT_DELAY_SECONDS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, main_content, seed_request
from tests.support.runs import parse_sse
from tests.support.server import ServerProcess

BOOT_DELAY_SECONDS = 3  # the window is this plus the runtime's import and warm-up (a few seconds more)
BOOT_FAILURE = "synthetic boot failure from the warm-up test"
BUNDLE = {"mthds_contents": [SEED_BUNDLE]}
PROTOCOL_RUN = {"pipe_code": "summarize", "mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}}

# Every route that needs the runtime: name -> (method, path, body). The run routes, live and dry.
ROUTES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "execute live": ("POST", "/api/v1/pipeline/execute", seed_request()),
    "execute dry": ("POST", "/api/v1/pipeline/execute", seed_request(dry_run=True)),
    "start live": ("POST", "/api/v1/pipeline/start", seed_request()),
    "start dry": ("POST", "/api/v1/pipeline/start", seed_request(dry_run=True)),
    "validate": ("POST", "/api/v1/validate", BUNDLE),
    "build inputs": ("POST", "/api/v1/build/inputs", {**BUNDLE, "format": "json"}),
    "build output": ("POST", "/api/v1/build/output", {**BUNDLE, "format": "schema"}),
    "build runner": ("POST", "/api/v1/build/runner", {**BUNDLE, "target": "http"}),
    "v1 execute live": ("POST", "/v1/execute", PROTOCOL_RUN),
    "v1 execute dry": ("POST", "/v1/execute", {**PROTOCOL_RUN, "dry_run": True}),
    "v1 start live": ("POST", "/v1/start", PROTOCOL_RUN),
    "v1 start dry": ("POST", "/v1/start", {**PROTOCOL_RUN, "dry_run": True}),
    "v1 validate": ("POST", "/v1/validate", BUNDLE),
    "models": ("GET", "/api/v1/models", None),
    "v1 models": ("GET", "/v1/models", None),
}
SUCCESS_STATUS = {name: 202 if "start" in name else 200 for name in ROUTES}
LIVE_RUNS = [name for name in ROUTES if name.endswith("live")]


@dataclass
class Answer:
    sent_at: float
    answered_at: float
    response: httpx.Response

    @property
    def seconds(self) -> float:
        return self.answered_at - self.sent_at


def _call(base_url: str, method: str, path: str, body: dict[str, Any] | None) -> Answer:
    with httpx.Client(base_url=base_url, timeout=90) as http:
        sent_at = time.monotonic()
        response = http.request(method, path, json=body)
        return Answer(sent_at, time.monotonic(), response)


@dataclass
class Probe:
    started_at: float
    response: httpx.Response


def _send_all_in_the_window(server: ServerProcess) -> tuple[dict[str, Answer], list[Probe]]:
    """Every route at once, then /health/ready probed until they have all answered."""
    probes: list[Probe] = []
    with ThreadPoolExecutor(len(ROUTES)) as pool, httpx.Client(base_url=server.url, timeout=10) as http:
        futures = {name: pool.submit(_call, server.url, *route) for name, route in ROUTES.items()}
        pending = set(futures.values())
        while pending:
            started_at = time.monotonic()
            probes.append(Probe(started_at, http.get("/health/ready")))
            _done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
        return {name: future.result() for name, future in futures.items()}, probes


def _outcomes(answers: dict[str, Answer]) -> dict[str, tuple[int, str | None]]:
    def code(response: httpx.Response) -> str | None:
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            return response.json().get("code")
        return None

    return {name: (answer.response.status_code, code(answer.response)) for name, answer in answers.items()}


def _assert_not_ready(answers: dict[str, Answer]) -> None:
    assert _outcomes(answers) == dict.fromkeys(ROUTES, (503, "server.not_ready"))
    for name, answer in answers.items():
        assert int(answer.response.headers["Retry-After"]) > 0, name


def _start_in_its_window(tmp_path: Any, stub: Any, **env: str) -> ServerProcess:
    """A server whose /health answers while its runtime has not booted yet."""
    server = ServerProcess(tmp_path, env={"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": stub.base_url, **env})
    server.start(wait_ready=False)
    server.wait_until("/health", timeout=60)
    return server


def _assert_starting(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["checks"]["runtime"] == "starting"


def _follow_to_end(server: ServerProcess, run_id: str) -> dict[str, Any]:
    with server.client() as http:
        events = parse_sse(http.get(f"/api/v1/runs/{run_id}/events", timeout=90).text)
        assert events[-1]["event"] == "end", events
        return http.get(f"/api/v1/runs/{run_id}").json()


def test_requests_sent_before_the_runtime_is_ready_wait_for_it_then_succeed(tmp_path, stub):
    server = _start_in_its_window(tmp_path, stub, PIPELEX_SERVER_TEST_BOOT_DELAY_SECONDS=str(BOOT_DELAY_SECONDS), READY_WAIT_SECONDS="60")
    try:
        with server.client() as http:
            _assert_starting(http.get("/health/ready"))
            assert http.get("/api/v1/version").status_code == 200  # public, and needs no runtime
            assert http.get("/v1/version").status_code == 200
        answers, probes = _send_all_in_the_window(server)

        assert _outcomes(answers) == {name: (SUCCESS_STATUS[name], None) for name in ROUTES}
        # the server was seen not ready after every request had been sent, and each answered only after that
        last_sent = max(answer.sent_at for answer in answers.values())
        not_ready_after_sends = [probe for probe in probes if probe.started_at > last_sent and probe.response.status_code == 503]
        assert not_ready_after_sends, "the window closed before the requests were sent: widen BOOT_DELAY_SECONDS"
        for probe in not_ready_after_sends:
            _assert_starting(probe.response)
        held_until = not_ready_after_sends[-1].started_at
        assert all(answer.answered_at > held_until for answer in answers.values())
        with server.client() as http:
            ready = http.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["checks"]["runtime"] == "ok"

        # and they did what they were asked, live runs included
        assert main_content(answers["execute live"].response.json())["text"].startswith("STUB: Summarize")
        assert answers["execute dry"].response.json()["dry_run"] is True
        assert answers["v1 execute live"].response.json()["status"] == "COMPLETED"
        assert answers["validate"].response.json()["success"] is True
        assert answers["v1 validate"].response.json()["is_valid"] is True
        for name in ("start live", "start dry", "v1 start live", "v1 start dry"):
            run = _follow_to_end(server, answers[name].response.json()["pipeline_run_id"])
            assert run["pipeline_state"] == "COMPLETED", (name, run)
        assert stub.stats()["total_calls"] == len(LIVE_RUNS)
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_requests_sent_before_the_runtime_is_ready_answer_503_after_ready_wait_seconds(tmp_path, stub):
    server = _start_in_its_window(tmp_path, stub, PIPELEX_SERVER_TEST_BOOT_DELAY_SECONDS=str(BOOT_DELAY_SECONDS), READY_WAIT_SECONDS="0.5")
    try:
        answers, probes = _send_all_in_the_window(server)
        _assert_not_ready(answers)
        for name, answer in answers.items():
            assert answer.seconds >= 0.45, (name, answer.seconds)  # each waited READY_WAIT_SECONDS first
        assert probes[-1].started_at > max(answer.sent_at for answer in answers.values())
        for probe in probes:
            _assert_starting(probe.response)
        assert stub.stats()["total_calls"] == 0
    finally:
        server.kill()  # nothing more to see: no need to let it finish booting


@pytest.fixture(scope="module")
def failed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose runtime boot fails (PIPELEX_SERVER_TEST_BOOT_FAILURE); its HTTP side stays up."""
    server = ServerProcess(tmp_path_factory.mktemp("failed-boot"), env={"PIPELEX_SERVER_TEST_BOOT_FAILURE": BOOT_FAILURE})
    server.start(wait_ready=False)
    server.wait_until("/health", timeout=60)
    try:
        yield server
    finally:
        server.stop()


def test_a_failed_boot_keeps_the_process_live_and_names_the_failure(failed_server):
    with failed_server.client() as http:
        assert http.get("/health").status_code == 200
        answers, probes = _send_all_in_the_window(failed_server)
        _assert_not_ready(answers)
        ready = probes[-1].response
        assert ready.status_code == 503
        assert int(ready.headers["Retry-After"]) > 0
        assert ready.json()["checks"]["runtime"] == f"failing: boot error: RuntimeError: {BOOT_FAILURE}"
        assert ready.json()["checks"]["run_store"] == "ok"
        assert http.get("/api/v1/version").status_code == 200
    assert BOOT_FAILURE in failed_server.log()


def test_a_failed_boot_answers_503_at_once(failed_server):
    answers, _probes = _send_all_in_the_window(failed_server)
    _assert_not_ready(answers)
    assert all(answer.seconds < 5 for answer in answers.values())  # READY_WAIT_SECONDS is 30: nothing waited for it
    for answer in answers.values():
        problem = answer.response.json()
        assert "failed to boot" in problem["detail"]
        assert BOOT_FAILURE not in problem["detail"]  # the reason is for the operator (log, /health/ready)
