"""`method_ref`: a published package fetched with git (through `url.<base>.insteadOf` to a local bare repository, no
network), cached by commit, run, validated and started, with its provenance in the answer and on the run."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gitrepo import ADDRESS, V2_DISPLAY_NAME, MenuRepository, served_menu_repository
from tests.support.runs import wait_for_end

NOTE = "grilled fish, lemon tart TOKEN-MENU"
V1, V2 = f"{ADDRESS}@v1.0.0", f"{ADDRESS}@v2.0.0"


def main_text(answer: dict[str, Any]) -> str:
    return answer["pipe_output"]["working_memory"]["root"][answer["main_stuff_name"]]["content"]["text"]


def problem_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code, problem
    return problem


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MenuRepository:
    return served_menu_repository(tmp_path / "repo", monkeypatch)


@pytest.fixture
async def app(make_app: Any, tmp_path: Path, repo: MenuRepository) -> Any:
    """An app with a cache of its own (the session app's cache outlives a test)."""
    return await make_app(method_cache_dir=tmp_path / "cache")


def cached_commits(app: Any) -> list[str]:
    return sorted(entry.name for entry in app.services.methods.cache.entries())


async def stored_provenance(app: Any, run_id: str) -> dict[str, Any]:
    row = await app.services.runs.repository.get_public("shared", run_id)  # AUTH_MODE=none: the shared caller
    return row["request"]["method_provenance"]


def assert_nothing_half_written(app: Any) -> None:
    staging = app.services.methods.cache.root / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []


# ---------------------------------------------------------------- runs, validates, starts at each tag


async def test_execute_by_method_ref_runs_each_tag_with_its_provenance(app: Any, repo: MenuRepository) -> None:
    first = await app.client.post("/v1/execute", json={"method_ref": V1, "inputs": {"note": NOTE}})
    assert first.status_code == 200, first.text
    assert main_text(first.json()).startswith("STUB: KITCHEN write a menu card for: STUB: DRAFTING")
    provenance = first.json()["method_provenance"]
    assert provenance["address"] == ADDRESS and provenance["tag"] == "v1.0.0"
    assert provenance["commit_sha"] == repo.commits["v1.0.0"]
    assert provenance["tree_digest"].startswith("sha256:") and provenance["display_name"] is None

    second = await app.client.post("/v1/execute", json={"method_ref": V2, "inputs": {"note": NOTE}})
    assert second.status_code == 200, second.text
    assert main_text(second.json()).startswith("STUB: KITCHEN V2 write a menu card for: STUB: DRAFTING")
    v2 = second.json()["method_provenance"]
    assert v2["commit_sha"] == repo.commits["v2.0.0"] and v2["display_name"] == V2_DISPLAY_NAME
    assert v2["tree_digest"] != provenance["tree_digest"]

    # no tag: the default branch's HEAD (v2 here), recorded with no tag
    bare = await app.client.post("/v1/execute", json={"method_ref": ADDRESS, "inputs": {"note": NOTE}})
    assert bare.status_code == 200, bare.text
    assert bare.json()["method_provenance"]["tag"] is None
    assert bare.json()["method_provenance"]["commit_sha"] == repo.commits["v2.0.0"]

    # the run keeps it: its stored request names the commit that ran
    assert await stored_provenance(app, first.json()["pipeline_run_id"]) == provenance
    assert repo.fetches() == 2 and cached_commits(app) == sorted(repo.commits.values())


async def test_validate_and_start_by_method_ref(app: Any, repo: MenuRepository) -> None:
    verdict = await app.client.post("/v1/validate", json={"method_ref": V1})
    assert verdict.status_code == 200, verdict.text
    assert verdict.json()["is_valid"] is True, verdict.json()

    started = await app.client.post("/v1/start", json={"method_ref": V2, "inputs": {"note": NOTE}})
    assert started.status_code == 202, started.text
    assert started.json()["method_provenance"]["commit_sha"] == repo.commits["v2.0.0"]
    run = await wait_for_end(app.client, started.json()["pipeline_run_id"])
    assert run["pipeline_state"] == "COMPLETED", run
    assert main_text(run).startswith("STUB: KITCHEN V2 write"), run
    assert await stored_provenance(app, run["pipeline_run_id"]) == started.json()["method_provenance"]


async def test_a_retried_start_is_the_same_run_and_fetches_nothing_again(app: Any, repo: MenuRepository) -> None:
    body = {"method_ref": V1, "inputs": {"note": NOTE}}
    first = await app.client.post("/v1/start", json=body, headers={"Idempotency-Key": "menu-once"})
    again = await app.client.post("/v1/start", json=body, headers={"Idempotency-Key": "menu-once"})
    assert first.status_code == again.status_code == 202, again.text
    assert first.json()["pipeline_run_id"] == again.json()["pipeline_run_id"] == "menu-once"
    assert again.json()["method_provenance"] == first.json()["method_provenance"]
    assert repo.fetches() == 1
    await wait_for_end(app.client, "menu-once")


def test_a_cache_opened_over_a_killed_fetch_clears_its_stale_staging(tmp_path: Path) -> None:
    from pipelex_server.methods.cache import STAGING, STALE_STAGING_SECONDS, MethodCache
    from pipelex_server.methods.git import Git

    stale, live = tmp_path / STAGING / "stale", tmp_path / STAGING / "live"
    for directory in (stale, live):
        (directory / "objects").mkdir(parents=True)
    old = time.time() - STALE_STAGING_SECONDS - 60
    os.utime(stale, (old, old))
    MethodCache(tmp_path, git=Git(), max_clones=1, max_total_bytes=1, max_age_seconds=1)
    assert not stale.exists() and live.exists()  # another live process may still be writing a young one


async def test_a_second_request_for_a_commit_fetches_nothing(app: Any, repo: MenuRepository) -> None:
    for _ in range(2):
        response = await app.client.post("/v1/execute", json={"method_ref": V1, "inputs": {"note": NOTE}, "dry_run": True})
        assert response.status_code == 200, response.text
    assert repo.fetches() == 1  # the bare repository served one pack
    assert app.services.methods.cache.fetches == 1
    fetch_commands = [args for args in app.services.methods.git.invocations if "fetch" in args]
    assert len(fetch_commands) == 1


async def test_concurrent_first_requests_for_one_commit_fetch_it_once(app: Any, repo: MenuRepository) -> None:
    answers = await asyncio.gather(*(app.client.post("/v1/validate", json={"method_ref": V1}) for _ in range(5)))
    assert all(answer.status_code == 200 and answer.json()["is_valid"] for answer in answers), [a.text for a in answers]
    assert repo.fetches() == 1
    assert cached_commits(app) == [repo.commits["v1.0.0"]]
    assert_nothing_half_written(app)


# ---------------------------------------------------------------- refusals


async def test_an_unknown_tag_is_a_404_and_caches_nothing(app: Any, repo: MenuRepository) -> None:
    response = await app.client.post("/v1/execute", json={"method_ref": f"{ADDRESS}@v9.9.9", "inputs": {"note": NOTE}})
    problem = problem_of(response, 404, "method.not_found")
    assert "v9.9.9" in problem["detail"]
    # a branch is no tag
    branch = await app.client.post("/v1/validate", json={"method_ref": f"{ADDRESS}@main"})
    problem_of(branch, 404, "method.not_found")
    assert cached_commits(app) == [] and repo.fetches() == 0


async def test_an_unreachable_repository_is_a_502(app: Any, repo: MenuRepository, tmp_path: Path) -> None:
    repo.mirror("github.com/pipelex-server-tests/gone", f"file://{tmp_path / 'no-such-repository.git'}")
    response = await app.client.post("/v1/execute", json={"method_ref": "github.com/pipelex-server-tests/gone@v1.0.0"})
    problem = problem_of(response, 502, "method.fetch_failed")
    assert problem["retry"] == "yes", problem
    assert cached_commits(app) == []
    assert_nothing_half_written(app)


@pytest.fixture
def silent_host() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


async def test_a_host_that_never_answers_is_a_502_within_the_deadline(
    make_app: Any, repo: MenuRepository, tmp_path: Path, silent_host: int
) -> None:
    app = await make_app(method_cache_dir=tmp_path / "cache", method_fetch_timeout_seconds=1)
    repo.mirror("github.com/pipelex-server-tests/silent", f"http://127.0.0.1:{silent_host}/silent.git")
    began = time.monotonic()
    response = await app.client.post("/v1/validate", json={"method_ref": "github.com/pipelex-server-tests/silent"})
    elapsed = time.monotonic() - began
    problem = problem_of(response, 502, "method.fetch_failed")
    assert "time" in problem["detail"], problem
    assert elapsed < 5, elapsed
    assert cached_commits(app) == []
    assert_nothing_half_written(app)


async def test_a_symbolic_link_in_the_package_is_refused_by_name(app: Any, repo: MenuRepository) -> None:
    repo.tag("v3.0.0", {}, symlinks={"kitchen/linked.mthds": "menu.mthds"})
    response = await app.client.post("/v1/execute", json={"method_ref": f"{ADDRESS}@v3.0.0", "inputs": {"note": NOTE}})
    problem = problem_of(response, 422, "method.package_invalid")
    assert problem["params"]["reason"] == "symlink" and problem["params"]["path"] == "kitchen/linked.mthds", problem
    assert_nothing_half_written(app)


async def test_python_in_the_package_is_refused(app: Any, repo: MenuRepository) -> None:
    repo.tag("v4.0.0", {"tools/helper.py": "import os\n"})
    response = await app.client.post("/v1/validate", json={"method_ref": f"{ADDRESS}@v4.0.0"})
    problem = problem_of(response, 422, "pipelex.deployment.custom_code_requires_sandbox")
    assert problem["params"]["path"] == "tools/helper.py", problem


async def test_method_ref_with_another_source_or_a_bad_address_is_refused(app: Any, repo: MenuRepository) -> None:
    both = await app.client.post("/v1/execute", json={"method_ref": V1, "files": {"a.mthds": "x"}})
    assert problem_of(both, 422, "request.invalid")["params"]["field"] == "method_ref"
    other_host = await app.client.post("/v1/execute", json={"method_ref": "gitlab.com/a/b@v1"})
    problem_of(other_host, 422, "request.unsupported")
    bad = await app.client.post("/v1/validate", json={"method_ref": "github.com/only-owner"})
    problem_of(bad, 422, "request.invalid")
    unknown_package = await app.client.post("/v1/validate", json={"method_ref": f"{ADDRESS}/nothing-here@v1.0.0"})
    problem_of(unknown_package, 404, "method.not_found")


async def test_the_seed_and_build_routes_take_a_method_ref_too(app: Any, repo: MenuRepository) -> None:
    executed = await app.client.post("/api/v1/pipeline/execute", json={"method_ref": V2, "inputs": {"note": NOTE}})
    assert executed.status_code == 200, executed.text
    assert main_text(executed.json()).startswith("STUB: KITCHEN V2 write a menu card for: STUB: DRAFTING")
    assert executed.json()["method_provenance"]["commit_sha"] == repo.commits["v2.0.0"]

    started = await app.client.post("/api/v1/pipeline/start", json={"method_ref": V1, "inputs": {"note": NOTE}})
    assert started.status_code == 202, started.text
    run = await wait_for_end(app.client, started.json()["pipeline_run_id"])
    assert run["pipeline_state"] == "COMPLETED", run
    assert run["method_provenance"]["commit_sha"] == repo.commits["v1.0.0"]  # on the run document too

    verdict = await app.client.post("/api/v1/validate", json={"method_ref": V1})
    assert verdict.status_code == 200 and verdict.json()["success"] is True, verdict.text
    template = await app.client.post("/api/v1/build/inputs", json={"method_ref": V1, "format": "json"})
    assert template.status_code == 200, template.text
    assert "note" in template.text
    assert repo.fetches() == 2  # one per commit, whatever the route

    both = await app.client.post("/api/v1/pipeline/execute", json={"method_ref": V1, "mthds_contents": ["x"]})
    assert problem_of(both, 422, "request.invalid")["params"]["field"] == "method_ref"


# ---------------------------------------------------------------- cache bounds


async def test_the_cache_keeps_within_its_count_and_age_bounds(make_app: Any, repo: MenuRepository, tmp_path: Path) -> None:
    app = await make_app(method_cache_dir=tmp_path / "cache", max_method_cache_clones=1)
    for ref in (V1, V2):
        response = await app.client.post("/v1/validate", json={"method_ref": ref})
        assert response.status_code == 200, response.text
    assert cached_commits(app) == [repo.commits["v2.0.0"]]  # the oldest went; the newest stays
    again = await app.client.post("/v1/validate", json={"method_ref": V1})
    assert again.status_code == 200 and repo.fetches() == 3  # evicted: fetched anew

    aged = await make_app(method_cache_dir=tmp_path / "aged", max_method_cache_age_hours=1)
    assert (await aged.client.post("/v1/validate", json={"method_ref": V1})).status_code == 200
    old = time.time() - 2 * 3600
    os.utime(aged.services.methods.cache.root / repo.commits["v1.0.0"], (old, old))
    assert (await aged.client.post("/v1/validate", json={"method_ref": V2})).status_code == 200
    assert cached_commits(aged) == [repo.commits["v2.0.0"]]


async def test_the_cache_keeps_within_its_byte_bound(make_app: Any, repo: MenuRepository, tmp_path: Path) -> None:
    app = await make_app(method_cache_dir=tmp_path / "cache", max_method_cache_total_kib=1)
    for ref in (V1, V2):
        assert (await app.client.post("/v1/validate", json={"method_ref": ref})).status_code == 200
    assert cached_commits(app) == [repo.commits["v2.0.0"]]  # past the bound, but the newest entry always stays


# ---------------------------------------------------------------- the official client, against a live server


@pytest.mark.slow
async def test_the_official_client_runs_a_method_ref_against_a_live_server(tmp_path: Path, stub: Any, repo: MenuRepository) -> None:
    from pipelex_sdk.client import PipelexAPIClient

    from tests.support.server import ServerProcess

    env = {"OPENAI_BASE_URL": stub.base_url, "AUTH_MODE": "none", **repo.env}
    with ServerProcess(tmp_path / "server", env=env).start() as server:
        async with PipelexAPIClient(api_key="", base_url=server.url, request_timeout_seconds=60) as client:
            result = await client.execute(method_ref=V2, inputs={"note": NOTE})
            assert result.method_provenance is not None
            assert result.method_provenance.commit_sha == repo.commits["v2.0.0"]
            assert str(result.main_stuff["text"]).startswith("STUB: KITCHEN V2 write")
            earlier = await client.execute(method_ref=V1, inputs={"note": NOTE})
            assert str(earlier.main_stuff["text"]).startswith("STUB: KITCHEN write")
