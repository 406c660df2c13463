"""Background runs against real server processes: SSE over a real connection, kill -9, SIGTERM, two processes."""

import signal
import uuid

import httpx
import pytest

from tests.support.bundles import SEQUENCE_BUNDLE, main_content, seed_request
from tests.support.runs import parse_sse
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

START = "/api/v1/pipeline/start"


def stub_env(stub, **extra):
    return {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": stub.base_url, **{key: str(value) for key, value in extra.items()}}


def follow_to_end(http: httpx.Client, run_id: str) -> dict:
    events = parse_sse(http.get(f"/api/v1/runs/{run_id}/events", timeout=120).text)
    assert events[-1]["event"] == "end", events
    return http.get(f"/api/v1/runs/{run_id}").json()


def test_sse_over_a_real_connection_resumes_with_last_event_id(tmp_path, stub):
    stub.configure(latency_ms=300)
    with ServerProcess(tmp_path, env=stub_env(stub)) as server, server.client() as http:
        inputs = {"note": {"concept": "KitchenNote", "content": "leeks"}}
        run_id = http.post(START, json={"mthds_contents": [SEQUENCE_BUNDLE], "inputs": inputs}).json()["pipeline_run_id"]
        seen = []
        with http.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            buffer = ""
            for chunk in stream.iter_text():
                buffer += chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    seen += parse_sse(block + "\n\n")
                if any(event["event"] == "pipe_finished" for event in seen):
                    break  # drop the connection mid-run
        assert seen[-1]["event"] != "end"
        resumed = parse_sse(http.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(seen[-1]["id"])}, timeout=60).text)
        replay = parse_sse(http.get(f"/api/v1/runs/{run_id}/events").text)
        assert [event["id"] for event in seen + resumed] == [event["id"] for event in replay]
        assert replay[-1]["event"] == "end" and replay[-1]["data"]["pipeline_state"] == "COMPLETED"


def test_kill_9_mid_run_then_restart_settles_what_was_lost_and_keeps_the_rest(tmp_path, stub):
    env = stub_env(stub, LEASE_SECONDS=2, MAX_CONCURRENT_RUNS=1)
    first = ServerProcess(tmp_path, env=env).start()
    with first.client() as http:
        done = http.post("/api/v1/pipeline/execute", json=seed_request()).json()
        stub.configure(latency_ms=60_000)
        running = http.post(START, json=seed_request(inputs={"text": "blocked in the provider"})).json()
        queued = http.post(START, json=seed_request(inputs={"text": "waiting for a slot"})).json()
        assert queued["pipeline_state"] == "STARTED"
        assert stub.wait_in_flight(1, 30)
    first.kill()
    stub.reset()

    second = ServerProcess(tmp_path, env=env)
    second.port = first.port
    second.url = first.url
    with second, second.client() as http:
        lost = follow_to_end(http, running["pipeline_run_id"])
        assert lost["pipeline_state"] == "ERROR"
        assert lost["error"]["code"] == "run.lost"
        requeued = follow_to_end(http, queued["pipeline_run_id"])
        assert requeued["pipeline_state"] == "COMPLETED"
        assert "waiting for a slot" in main_content(requeued)["text"]
        kept = http.get(f"/api/v1/runs/{done['pipeline_run_id']}").json()
        assert kept["pipeline_state"] == "COMPLETED" and kept["pipe_output"] == done["pipe_output"]
        assert stub.stats()["total_calls"] == 1  # only the re-queued run ran on the new process


def test_sigterm_lets_running_runs_finish_and_hands_back_queued_ones(tmp_path, stub):
    env = stub_env(stub, MAX_CONCURRENT_RUNS=1, SHUTDOWN_GRACE_SECONDS=30)
    first = ServerProcess(tmp_path, env=env).start()
    stub.configure(latency_ms=1_500)
    with first.client() as http:
        running = http.post(START, json=seed_request(inputs={"text": "finish me"})).json()
        queued = http.post(START, json=seed_request(inputs={"text": "hand me back"})).json()
        assert stub.wait_in_flight(1, 30)
    assert first.stop(signal.SIGTERM, timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once stopped
    stub.configure(latency_ms=0)
    with ServerProcess(tmp_path, env=env) as second, second.client() as http:
        finished = http.get(f"/api/v1/runs/{running['pipeline_run_id']}").json()
        assert finished["pipeline_state"] == "COMPLETED"
        handed_back = follow_to_end(http, queued["pipeline_run_id"])
        assert handed_back["pipeline_state"] == "COMPLETED"
        assert "hand me back" in main_content(handed_back)["text"]


def test_two_processes_on_one_postgresql_agree(tmp_path, stub, postgres_url):
    env = stub_env(stub, DATABASE_URL=postgres_url)
    with (
        ServerProcess(tmp_path / "a", env=env) as a,
        ServerProcess(tmp_path / "b", env=env) as b,
        a.client() as http_a,
        b.client() as http_b,
    ):
        stub.configure(latency_ms=60_000)
        run_id = f"pg-{uuid.uuid4().hex}"
        started = http_a.post(START, json=seed_request(pipeline_run_id=run_id))
        again = http_b.post(START, json=seed_request(pipeline_run_id=run_id))
        assert started.status_code == again.status_code == 202
        assert stub.wait_in_flight(1, 30)
        assert http_b.get(f"/api/v1/runs/{run_id}").json()["pipeline_state"] == "RUNNING"
        cancelled = http_b.post(f"/api/v1/runs/{run_id}/cancel")
        assert cancelled.status_code == 202
        final = follow_to_end(http_b, run_id)
        assert final["pipeline_state"] == "CANCELLED"
        assert http_a.get(f"/api/v1/runs/{run_id}").json()["pipeline_state"] == "CANCELLED"
        assert stub.stats()["total_calls"] <= 1  # the abandoned call is never answered, and never made twice
