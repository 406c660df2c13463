"""AUTH_MODE=keys end to end: a live server process, keys minted by the `pipelex-server keys` CLI (another process on
the same database), and the official `PipelexAPIClient`, unchanged, for two callers, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pipelex_sdk.client import PipelexAPIClient
from pipelex_sdk.errors import ApiResponseError

from tests.support.bundles import SEED_BUNDLE, SEED_TEXT
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

BOOTSTRAP = "bootstrap-live-key-0123456789abcdef"
SEED_FILES = {"hello.mthds": SEED_BUNDLE}
RUN = uuid.uuid4().hex[:8]  # the session's PostgreSQL database is shared: callers of this module are its own


def n(caller: str) -> str:
    return f"{caller}-{RUN}"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[ServerProcess]:
    env = {"OPENAI_BASE_URL": stub.base_url, "AUTH_MODE": "keys", "API_KEY": BOOTSTRAP, "API_KEYS_MAX_PER_CALLER": "4"}
    if request.param == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    with ServerProcess(tmp_path_factory.mktemp(f"keys-{request.param}"), env=env) as running:
        yield running


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipelex_server.cli", "keys", *args]
    return subprocess.run(command, cwd=server.cwd, env=server.env, capture_output=True, text=True, timeout=120, check=False)


def cli_mint(server: ServerProcess, caller: str, label: str) -> dict[str, Any]:
    done = cli(server, "create", "--caller", caller, "--label", label)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sdk(server: ServerProcess, key: str) -> PipelexAPIClient:
    return PipelexAPIClient(api_key=key, base_url=server.url, request_timeout_seconds=60)


async def test_cli_minted_keys_drive_the_sdk_and_keep_callers_apart(server: ServerProcess) -> None:
    alice, bob = cli_mint(server, n("alice"), "alice laptop"), cli_mint(server, n("bob"), "bob ci")
    assert alice["api_key"].startswith("plx_sk_") and alice["caller_id"] == n("alice")

    async with sdk(server, alice["api_key"]) as client:
        assert (await client.get_me()).user_id == n("alice")
        listed = await client.list_pipelex_api_keys()
        assert [(key.id, key.label, key.prefix) for key in listed.keys] == [(alice["id"], "alice laptop", alice["prefix"])]
        assert listed.keys[0].last_used_at is not None  # this very request used it
        executed = await client.execute(files=SEED_FILES, inputs={"text": SEED_TEXT})
        run_id = executed.pipeline_run_id
        assert (await client.get_run_status(run_id)).pipeline_run_id == run_id

    async with sdk(server, bob["api_key"]) as client:
        assert (await client.get_me()).user_id == n("bob")
        with pytest.raises(ApiResponseError) as hidden:
            await client.get_run_status(run_id)
        assert (hidden.value.status, hidden.value.problem.code) == (404, "run.not_found")
        with pytest.raises(ApiResponseError) as foreign:
            await client.revoke_pipelex_api_key(alice["id"])
        assert (foreign.value.status, foreign.value.problem.code) == (404, "pipelex.org.not_found")
        assert [key.id for key in (await client.list_pipelex_api_keys()).keys] == [bob["id"]]


async def test_the_sdk_creates_rotates_and_revokes_and_the_old_secret_stops_at_once(server: ServerProcess) -> None:
    first = cli_mint(server, n("carol"), "first")
    async with sdk(server, first["api_key"]) as client:
        second = await client.create_pipelex_api_key("second")
        assert second.api_key.startswith(second.prefix) and second.label == "second"
        rotated = await client.rotate_pipelex_api_key(second.id)
        assert rotated.id == second.id and rotated.api_key != second.api_key
    async with sdk(server, second.api_key) as stale:
        with pytest.raises(ApiResponseError) as refused:
            await stale.get_me()
        assert (refused.value.status, refused.value.problem.code) == (401, "auth.invalid_credential")
    async with sdk(server, rotated.api_key) as client:
        assert (await client.get_me()).user_id == n("carol")
        await client.revoke_pipelex_api_key(rotated.id)
        with pytest.raises(ApiResponseError) as revoked:
            await client.get_me()
        assert revoked.value.problem.code == "auth.invalid_credential"


async def test_a_revocation_by_another_process_is_effective_at_once(server: ServerProcess) -> None:
    key = cli_mint(server, n("dave"), "to revoke")
    async with sdk(server, key["api_key"]) as client:
        assert (await client.get_me()).user_id == n("dave")  # the server has seen (and used) the key
        done = cli(server, "revoke", "--caller", n("dave"), "--id", key["id"])
        assert done.returncode == 0 and json.loads(done.stdout)["revoked"] is True
        with pytest.raises(ApiResponseError) as refused:
            await client.get_me()
        assert refused.value.problem.code == "auth.invalid_credential"


async def test_the_cap_unsupported_routes_and_absent_keys_read_as_problems(server: ServerProcess) -> None:
    keys = [cli_mint(server, n("erin"), f"k{index}") for index in range(4)]
    over = cli(server, "create", "--caller", n("erin"), "--label", "k4")
    assert over.returncode == 1 and "API_KEYS_MAX_PER_CALLER" in over.stderr
    async with sdk(server, keys[0]["api_key"]) as client:
        with pytest.raises(ApiResponseError) as capped:
            await client.create_pipelex_api_key("k4")
        assert (capped.value.status, capped.value.problem.code) == (409, "pipelex.billing.plan_limit")
        with pytest.raises(ApiResponseError) as plans:
            await client.list_plans()
        assert (plans.value.status, plans.value.problem.code) == (501, "runtime.unsupported")
    async with sdk(server, "") as anonymous:
        with pytest.raises(ApiResponseError) as missing:
            await anonymous.get_me()
        assert (missing.value.status, missing.value.problem.code) == (401, "auth.missing_credential")


def test_the_bootstrap_key_over_http_and_no_secret_in_the_log(server: ServerProcess) -> None:
    operator = {"Authorization": f"Bearer {BOOTSTRAP}", "X-Pipelex-Caller": n("frank")}
    with server.client() as http:
        created = http.post("/v1/pipelex-api-keys", json={"label": "from the operator"}, headers=operator)
        assert created.status_code == 201
        secret = created.json()["api_key"]
        assert http.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).json()["user_id"] == n("frank")
        forbidden = http.post("/v1/execute", json={}, headers={"Authorization": f"Bearer {BOOTSTRAP}"})
        assert (forbidden.status_code, forbidden.json()["code"]) == (403, "auth.forbidden")
        listed = http.get("/v1/pipelex-api-keys", headers=operator).json()["keys"]
        assert [key["label"] for key in listed] == ["from the operator"]
    log = server.log()
    assert secret not in log and BOOTSTRAP not in log
    assert httpx.get(server.url + "/health").status_code == 200
