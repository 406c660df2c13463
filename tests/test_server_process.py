"""The real server: `pipelex-server serve` in a subprocess (uvicorn over loopback), with its own runtime config."""

import subprocess
import sys

import pytest

from tests.support.bundles import main_content, seed_request
from tests.support.server import ServerProcess

EXECUTE = "/api/v1/pipeline/execute"


def test_seed_example_over_http(tmp_path, stub):
    with ServerProcess(tmp_path, env={"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": stub.base_url}) as server, server.client() as http:
        response = http.post(EXECUTE, json=seed_request())
        assert response.status_code == 200, response.text
        assert main_content(response.json())["text"].startswith("STUB: Summarize")
        assert stub.stats()["total_calls"] == 1, [(r["status"], r["endpoint"], r["prompt"][:40]) for r in stub.stats()["recent"]]


def test_no_inference_configured_refuses_live_runs_and_never_dry_runs_silently(tmp_path, stub):
    with ServerProcess(tmp_path, env={"PIPELEX_GATEWAY_API_KEY": "old-gateway-key"}) as server, server.client() as http:
        response = http.post(EXECUTE, json=seed_request())
        assert response.status_code == 503
        problem = response.json()
        assert problem["code"] == "inference.not_configured"
        assert "OPENAI_API_KEY" in problem["detail"] and "OPENAI_BASE_URL" in problem["detail"]
        assert http.get("/api/v1/runs/" + "x" * 8).status_code == 404

        dry = http.post(EXECUTE, json=seed_request(dry_run=True))
        assert dry.status_code == 200, dry.text
        assert dry.json()["dry_run"] is True
        assert "DRY RUN" in main_content(dry.json())["text"]
        ready = http.get("/health/ready").json()
        assert ready["checks"]["inference"]["live"] is False
        assert stub.stats()["total_calls"] == 0
    assert "no Gateway any more" in server.log()


def test_a_single_provider_key_points_the_deck_defaults_at_that_provider(tmp_path):
    # A fake Anthropic key: nothing is called (dry run), but the deck's defaults must name Claude models.
    with ServerProcess(tmp_path, env={"ANTHROPIC_API_KEY": "sk-ant-fake"}) as server, server.client() as http:
        models = http.get("/api/v1/models").json()
        assert models["backends"]["single_llm_provider"] == "anthropic"
        general = models["aliases"]["llm"]["default-general"]
        assert general.startswith("claude"), general
        dry = http.post(EXECUTE, json=seed_request(dry_run=True))
        assert dry.status_code == 200, dry.text
        assert "claude" in main_content(dry.json())["text"]


def test_refuses_to_start_next_to_a_dotenv(tmp_path):
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / ".env").write_text("OPENAI_API_KEY=leak\n")
    server = ServerProcess(tmp_path)
    server.start(wait_ready=False)
    assert server.process.wait(timeout=60) != 0
    assert ".env" in server.log()


def test_unknown_auth_mode_stops_the_boot(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelex_server.cli", "serve"],
        env={"AUTH_MODE": "magic", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "AUTH_MODE" in result.stderr


def test_migrate_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelex_server.cli", "migrate"],
        env={"DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "pipelex-server.sqlite3").exists()


@pytest.mark.slow
def test_two_worker_processes_share_the_store(tmp_path, stub):
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": stub.base_url}
    with ServerProcess(tmp_path, env=env, args=("--workers", "2")) as server, server.client() as http:
        ids = set()
        for index in range(20):
            response = http.post(EXECUTE, json=seed_request(pipeline_run_id=f"w2-{index}"))
            assert response.status_code == 200, response.text
            ids.add(response.json()["pipeline_run_id"])
        for index in range(20):  # replays, served by either process, never run again
            assert http.post(EXECUTE, json=seed_request(pipeline_run_id=f"w2-{index}")).status_code == 200
        assert len(ids) == 20
        assert stub.stats()["total_calls"] == 20
        assert len(server.pid_tree()) >= 3


@pytest.mark.slow
def test_a_thousand_sequential_runs_leave_no_files_and_flat_memory(tmp_path, stub):
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": stub.base_url}
    with ServerProcess(tmp_path, env=env) as server, server.client() as http:

        def run(count: int) -> None:
            for _ in range(count):
                response = http.post(EXECUTE, json=seed_request())
                assert response.status_code == 200

        def files() -> set[str]:
            found = set()
            for root in (server.cwd, server.data_dir):
                found |= {str(path) for path in root.rglob("*") if path.is_file() and "sqlite3" not in path.name}
            return found

        run(200)
        files_before, rss_before = files(), server.rss_bytes()
        run(800)
        files_after, rss_after = files(), server.rss_bytes()
        assert files_after == files_before
        assert not list(server.cwd.rglob("*")), "the server wrote into its working directory"
        growth_mib = (rss_after - rss_before) / 2**20
        assert growth_mib < 25, f"RSS grew {growth_mib:.1f} MiB over 800 runs"
        assert stub.stats()["total_calls"] == 1000


def test_an_operator_configuration_directory_is_layered_on_the_servers(tmp_path, stub):
    operator = tmp_path / "operator"
    (operator / "inference" / "deck").mkdir(parents=True)
    (operator / "inference" / "deck" / "house.toml").write_text('[llm.aliases]\ndefault-general = "gpt-4o-mini"\n')
    env = {"OPENAI_BASE_URL": stub.base_url, "PIPELEX_CONFIG_DIR": str(operator)}
    with ServerProcess(tmp_path, env=env) as server, server.client() as http:
        assert http.get("/api/v1/models").json()["aliases"]["llm"]["default-general"] == "gpt-4o-mini"
        assert http.post(EXECUTE, json=seed_request()).status_code == 200
        assert stub.stats()["by_model"] == {"gpt-4o-mini": 1}
