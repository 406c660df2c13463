"""AUTH_MODE=keys in-process: the key routes in the SDK's wire shapes, two callers kept apart, rotation and revocation
effective at once, expiry, the per-caller cap, the bootstrap API_KEY, and refused keys as complete 401 problems; on
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from mthds.protocol.problem.models import Problem
from pipelex_sdk.product_models import PipelexApiKeyCreated, PipelexApiKeyList

from pipelex_server.store.tables import api_keys

BOOTSTRAP = "bootstrap-operator-key-0123456789abcdef"
RUN = uuid.uuid4().hex[:8]  # the session's PostgreSQL database is shared: callers of this module are its own


def n(caller: str) -> str:
    return f"{caller}-{RUN}"


KEYS = "/v1/pipelex-api-keys"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def operator_for(caller: str) -> dict[str, str]:
    return {**bearer(BOOTSTRAP), "X-Pipelex-Caller": caller}


def assert_complete_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    document = response.json()
    assert document["code"] == code
    for member in ("type", "title", "status", "detail", "domain", "retry", "next_step"):
        assert member in document, member
    assert all(value is not None for key, value in document.items() if key != "request_id"), document
    Problem.model_validate(document)  # what the SDK reads
    return document


@pytest.fixture
async def keys_app(make_app: Any, database_url: str) -> Any:
    return await make_app(auth_mode="keys", api_key=BOOTSTRAP, database_url=database_url, api_keys_max_per_caller=3)


async def mint(http: httpx.AsyncClient, caller: str, label: str = "laptop", **extra: Any) -> dict[str, Any]:
    response = await http.post(KEYS, json={"label": label, **extra}, headers=operator_for(caller))
    assert response.status_code == 201, response.text
    return PipelexApiKeyCreated.model_validate(response.json()).model_dump() | response.json()


async def test_the_bootstrap_key_mints_keys_that_authenticate_their_caller_only(keys_app: Any) -> None:
    http = keys_app.client
    alice, bob = await mint(http, n("alice")), await mint(http, n("bob"), "ci")
    assert alice["api_key"].startswith("plx_sk_") and alice["api_key"].startswith(alice["prefix"]) and alice["prefix"] != alice["api_key"]

    listed = await http.get(KEYS, headers=bearer(alice["api_key"]))
    assert listed.status_code == 200
    keys = PipelexApiKeyList.model_validate(listed.json()).keys
    assert [key.id for key in keys] == [alice["id"]]
    assert alice["api_key"] not in listed.text  # a list never shows a secret
    assert keys[0].expires_at is None

    # bob's key id, from alice: the same 404 as an unknown id, and bob's key still works
    for key_id in (bob["id"], "ak_000000000000000000000000"):
        assert_complete_problem(await http.delete(f"{KEYS}/{key_id}", headers=bearer(alice["api_key"])), 404, "pipelex.org.not_found")
        assert_complete_problem(await http.post(f"{KEYS}/{key_id}/rotate", headers=bearer(alice["api_key"])), 404, "pipelex.org.not_found")
    assert (await http.get(KEYS, headers=bearer(bob["api_key"]))).json()["keys"][0]["id"] == bob["id"]

    me = (await http.get("/v1/me", headers=bearer(bob["api_key"]))).json()
    assert me["user_id"] == n("bob") and me["api_key"] == {"id": bob["id"], "label": "ci", "prefix": bob["prefix"]}


async def test_a_caller_manages_its_own_keys(keys_app: Any) -> None:
    http = keys_app.client
    first = await mint(http, n("carol"))
    created = await http.post(KEYS, json={"label": "second"}, headers=bearer(first["api_key"]))
    assert created.status_code == 201
    second = created.json()
    assert set(second) >= {"api_key", "id", "label", "prefix", "created_at"} and second["label"] == "second"
    assert (await http.delete(f"{KEYS}/{second['id']}", headers=bearer(first["api_key"]))).status_code == 204
    assert_complete_problem(await http.get(KEYS, headers=bearer(second["api_key"])), 401, "auth.invalid_credential")


async def test_rotation_and_revocation_stop_the_old_secret_at_once(keys_app: Any) -> None:
    http = keys_app.client
    key = await mint(http, n("dave"))
    assert (await http.get(KEYS, headers=bearer(key["api_key"]))).status_code == 200

    rotated = await http.post(f"{KEYS}/{key['id']}/rotate", headers=bearer(key["api_key"]))
    assert rotated.status_code == 200
    new = PipelexApiKeyCreated.model_validate(rotated.json())
    assert new.id == key["id"] and new.label == key["label"] and new.api_key != key["api_key"] and new.prefix != key["prefix"]
    assert_complete_problem(await http.get(KEYS, headers=bearer(key["api_key"])), 401, "auth.invalid_credential")
    assert (await http.get(KEYS, headers=bearer(new.api_key))).status_code == 200

    assert (await http.delete(f"{KEYS}/{key['id']}", headers=operator_for(n("dave")))).status_code == 204
    assert_complete_problem(await http.get(KEYS, headers=bearer(new.api_key)), 401, "auth.invalid_credential")
    assert_complete_problem(await http.delete(f"{KEYS}/{key['id']}", headers=operator_for(n("dave"))), 404, "pipelex.org.not_found")


async def test_an_expired_key_is_refused_as_expired(keys_app: Any) -> None:
    http = keys_app.client
    soon = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    key = await mint(http, n("erin"), expires_at=soon)
    listed = (await http.get(KEYS, headers=bearer(key["api_key"]))).json()["keys"][0]
    assert datetime.fromisoformat(listed["expires_at"]) == datetime.fromisoformat(soon)

    async with keys_app.services.database.begin() as connection:  # time passes: the expiry is now behind us
        await connection.execute(
            sa.update(api_keys).where(api_keys.c.id == key["id"]).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    refused = assert_complete_problem(await http.get(KEYS, headers=bearer(key["api_key"])), 401, "auth.credential_expired")
    assert "expired" in refused["detail"]

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    bad = await http.post(KEYS, json={"label": "x", "expires_at": past}, headers=operator_for(n("erin")))
    assert assert_complete_problem(bad, 422, "request.invalid")["params"] == {"field": "expires_at"}
    naive = await http.post(KEYS, json={"label": "x", "expires_at": "2999-01-01T00:00:00"}, headers=operator_for(n("erin")))
    assert_complete_problem(naive, 422, "request.invalid")


async def test_the_per_caller_cap(keys_app: Any) -> None:
    http = keys_app.client
    keys = [await mint(http, n("frank"), f"k{index}") for index in range(3)]
    refused = await http.post(KEYS, json={"label": "one too many"}, headers=bearer(keys[0]["api_key"]))
    problem = assert_complete_problem(refused, 409, "pipelex.billing.plan_limit")
    assert problem["params"] == {"limit": "api_keys", "value": 3}
    await mint(http, n("grace"))  # another caller is not counted against frank
    assert (await http.delete(f"{KEYS}/{keys[2]['id']}", headers=bearer(keys[0]["api_key"]))).status_code == 204
    await mint(http, n("frank"), "after a revoke")


async def test_last_used_at_is_recorded_at_most_once_a_minute(keys_app: Any) -> None:
    http = keys_app.client
    key = await mint(http, n("heidi"))
    assert (await http.get(KEYS, headers=operator_for(n("heidi")))).json()["keys"][0]["last_used_at"] is None
    first = (await http.get(KEYS, headers=bearer(key["api_key"]))).json()["keys"][0]["last_used_at"]
    assert first is not None
    again = (await http.get(KEYS, headers=bearer(key["api_key"]))).json()["keys"][0]["last_used_at"]
    assert again == first


async def test_absent_malformed_and_unknown_keys_are_401_problems(keys_app: Any) -> None:
    http = keys_app.client
    missing = assert_complete_problem(await http.get(KEYS), 401, "auth.missing_credential")
    assert missing["next_step"]["kind"]
    assert (await http.get(KEYS)).headers["www-authenticate"].startswith("Bearer")
    for header in ("Basic abc", "Bearer ", "Bearer plx_sk_not-a-key", "Bearer " + "plx_sk_" + "a" * 300, "Bearer something-else"):
        response = await http.get(KEYS, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert_complete_problem(response, 401, response.json()["code"])
    assert_complete_problem(await http.get("/v1/models", headers=bearer("plx_sk_wrong")), 401, "auth.invalid_credential")


async def test_the_bootstrap_key_manages_keys_only(keys_app: Any) -> None:
    http = keys_app.client
    refused = await http.post("/v1/validate", json={"mthds_content": "x"}, headers=bearer(BOOTSTRAP))
    assert_complete_problem(refused, 403, "auth.forbidden")
    unnamed = await http.get(KEYS, headers=bearer(BOOTSTRAP))
    assert assert_complete_problem(unnamed, 400, "request.invalid")["params"] == {"field": "X-Pipelex-Caller"}
    bad_name = await http.get(KEYS, headers={**bearer(BOOTSTRAP), "X-Pipelex-Caller": "../etc"})
    assert_complete_problem(bad_name, 400, "request.invalid")
    assert (await http.get(KEYS, headers=operator_for(n("ivan")))).json() == {"keys": []}
    # a caller's own key cannot name another caller: the header is ignored
    key = await mint(http, n("ivan"))
    other = await http.get(KEYS, headers={**bearer(key["api_key"]), "X-Pipelex-Caller": n("judy")})
    assert [row["id"] for row in other.json()["keys"]] == [key["id"]]


async def test_bad_bodies_name_the_field(keys_app: Any) -> None:
    http = keys_app.client
    for body in ({}, {"label": ""}, {"label": "   "}, {"label": "x" * 257}, {"label": "tab\there"}, {"label": 5}):
        response = await http.post(KEYS, json=body, headers=operator_for(n("kim")))
        assert_complete_problem(response, 422, "request.invalid")


async def test_the_key_routes_need_auth_mode_keys(make_app: Any) -> None:
    app = await make_app(auth_mode="api_key", api_key="static-key")
    problem = assert_complete_problem(await app.client.get(KEYS, headers=bearer("static-key")), 501, "runtime.unsupported")
    assert "AUTH_MODE=keys" in problem["params"]["capability"]


async def test_concurrent_creates_never_pass_the_cap(keys_app: Any) -> None:
    import asyncio

    http = keys_app.client
    answers = await asyncio.gather(
        *(http.post(KEYS, json={"label": f"race {index}"}, headers=operator_for(n("mallory"))) for index in range(8))
    )
    assert sorted(answer.status_code for answer in answers) == [201] * 3 + [409] * 5
    assert len((await http.get(KEYS, headers=operator_for(n("mallory")))).json()["keys"]) == 3


async def test_api_key_ttl_days_sets_a_default_expiry(make_app: Any) -> None:
    app = await make_app(auth_mode="keys", api_key=BOOTSTRAP, api_key_ttl_days=2)
    key = await mint(app.client, n("nina"))
    expires = datetime.fromisoformat((await app.client.get(KEYS, headers=bearer(key["api_key"]))).json()["keys"][0]["expires_at"])
    assert timedelta(days=2) - timedelta(minutes=5) < expires - datetime.now(UTC) <= timedelta(days=2)


def test_a_short_bootstrap_key_stops_the_boot() -> None:
    from pipelex_server.errors import ConfigurationError
    from pipelex_server.settings import Settings

    with pytest.raises((ConfigurationError, ValueError), match="API_KEY"):
        Settings(auth_mode="keys", api_key="short")
    assert Settings(auth_mode="keys").api_key is None  # no bootstrap key: keys are minted with the CLI only


def test_the_cli_mints_lists_and_revokes_in_the_configured_database(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import json

    from pipelex_server.cli import main

    monkeypatch.setenv("AUTH_MODE", "keys")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as done:
        main(["keys", "create", "--caller", "olga", "--label", "cli", "--expires-in-days", "1"])
    assert done.value.code == 0
    created = json.loads(capsys.readouterr().out)
    assert created["api_key"].startswith(created["prefix"]) and created["caller_id"] == "olga" and created["expires_at"]
    with pytest.raises(SystemExit):
        main(["keys", "list", "--caller", "olga"])
    listed = capsys.readouterr().out
    assert created["id"] in listed and created["api_key"] not in listed
    with pytest.raises(SystemExit) as revoked:
        main(["keys", "revoke", "--caller", "olga", "--id", created["id"]])
    assert revoked.value.code == 0 and json.loads(capsys.readouterr().out)["revoked"] is True
    for bad in (["--caller", "no/slash", "--label", "x"], ["--caller", "ok", "--label", "x", "--expires-at", "2000-01-01T00:00:00Z"]):
        with pytest.raises(SystemExit) as refused:
            main(["keys", "create", *bad])
        assert refused.value.code == 2 and "configuration error" in capsys.readouterr().err
