"""`pipelex-server serve --workers 2`: one scrape of /metrics holds the figures of both worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.observability.scrape import moved, samples, total
from tests.support.bundles import seed_request
from tests.support.server import ServerProcess

EXECUTE = "/api/v1/pipeline/execute"
MAX_RUNS = 60

pytestmark = pytest.mark.slow


def _runs_counted_per_process(directory: Path) -> dict[str, float]:
    """Each worker process's own count of runs started, read from its file in the multiprocess directory."""
    counted: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        values = MmapedDict(str(path), read_mode=True)
        try:
            found = sum(value for key, value, _ in values.read_all_values() if json.loads(key)[1] == "pipelex_server_runs_started_total")
        finally:
            values.close()
        counted[path.stem.removeprefix("counter_")] = found
    return counted


def test_a_scrape_sums_every_worker_process(tmp_path, stub):
    directory = tmp_path / "metrics"
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": stub.base_url, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with ServerProcess(tmp_path, env=env, args=("--workers", "2")) as server:
        with server.client() as http:
            before = samples(http.get("/metrics").text)
        made = 0
        # new connections until both workers have run some (the kernel spreads accepted connections over them)
        while made < MAX_RUNS and sum(1 for count in _runs_counted_per_process(directory).values() if count) < 2:
            with server.client() as one:
                response = one.post(EXECUTE, json=seed_request(), headers={"Connection": "close"})
                assert response.status_code == 200, response.text
            made += 1
        per_process = _runs_counted_per_process(directory)
        scrapes = []
        for _ in range(6):
            with server.client() as one:
                scrapes.append(samples(one.get("/metrics", headers={"Connection": "close"}).text))
    assert sum(1 for count in per_process.values() if count) == 2, per_process
    assert sum(per_process.values()) == made
    # whichever worker answered a scrape, it counts the runs of both
    for after in scrapes:
        assert moved(before, after, "pipelex_server_runs_started_total", pipe_code="summarize") == made
        assert moved(before, after, "pipelex_server_runs_finished_total", state="COMPLETED") == made
        assert moved(before, after, "pipelex_server_llm_calls_total") == made
        assert moved(before, after, "pipelex_server_http_requests_total", route=EXECUTE, status="200") == made
        assert total(after, "pipelex_server_runs_running") == 0
    assert stub.stats()["total_calls"] == made


def test_one_worker_serves_metrics_without_a_multiprocess_directory(tmp_path, stub):
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": stub.base_url}
    with ServerProcess(tmp_path, env=env) as server, server.client() as http:
        before = samples(http.get("/metrics").text)
        assert http.post(EXECUTE, json=seed_request()).status_code == 200
        after = samples(http.get("/metrics").text)
    assert moved(before, after, "pipelex_server_runs_finished_total", state="COMPLETED") == 1
    assert total(after, "process_resident_memory_bytes") > 0  # the process collector, in single-process mode
