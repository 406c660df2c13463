"""Temporal mode: a real `pipelex-server worker` serves its own metrics on METRICS_PORT (the runs it executed, its
activity attempts, its inference calls); the API counts the runs it admitted and the fleet's queued/running runs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pipelex_server.temporal.workflows import EXECUTE_ACTIVITY
from tests.observability.scrape import moved, samples, total
from tests.support.bundles import seed_request
from tests.support.server import ServerProcess, free_port
from tests.support.temporal import TemporalDevServer, WorkerProcess

pytestmark = [pytest.mark.slow, pytest.mark.temporal]

EXECUTE = "/api/v1/pipeline/execute"
RUNS = 3


def test_the_worker_serves_its_figures_on_metrics_port(stub, tmp_path: Path) -> None:
    port = free_port()
    with TemporalDevServer(tmp_path / "temporal") as temporal:
        env = {
            **temporal.env(),
            "SINGLE_HOST": "true",
            "DATA_DIR": str(tmp_path / "data"),
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": stub.base_url,
            "METRICS_PORT": str(port),
        }
        worker = WorkerProcess(tmp_path / "worker", env=env).start()
        try:
            worker_before = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
            with ServerProcess(tmp_path / "api", env=env) as server, server.client() as http:
                api_before = samples(http.get("/metrics").text)
                for _ in range(RUNS):
                    response = http.post(EXECUTE, json=seed_request())
                    assert response.status_code == 200, response.text
                api_after = samples(http.get("/metrics").text)
            worker_after = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        finally:
            worker.stop()
    assert moved(api_before, api_after, "pipelex_server_runs_started_total", pipe_code="summarize") == RUNS
    assert total(api_after, "pipelex_server_runs_queued") == 0 and total(api_after, "pipelex_server_runs_running") == 0
    assert moved(worker_before, worker_after, "pipelex_server_temporal_activity_attempts_total", activity=EXECUTE_ACTIVITY) == RUNS
    assert moved(worker_before, worker_after, "pipelex_server_temporal_activity_retries_total") == 0
    assert moved(worker_before, worker_after, "pipelex_server_runs_finished_total", state="COMPLETED") == RUNS
    assert moved(worker_before, worker_after, "pipelex_server_llm_calls_total") == RUNS == stub.stats()["total_calls"]
    assert moved(worker_before, worker_after, "pipelex_server_pipe_duration_seconds_count", pipe_type="PipeLLM") == RUNS
