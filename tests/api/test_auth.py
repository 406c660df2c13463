"""Every auth mode with right, wrong, missing and expired credentials; callers see only their own runs."""

import time

import jwt
import pytest

from pipelex_server.errors import ConfigurationError
from pipelex_server.settings import Settings
from tests.support.bundles import seed_request

EXECUTE = "/api/v1/pipeline/execute"
SECRET = "jwt-test-secret-that-is-long-enough-for-hs256"


def token(user_id="alice", *, exp_in: float | None = 300, secret=SECRET, **claims) -> str:
    payload = {"user_id": user_id, **claims}
    if exp_in is not None:
        payload["exp"] = int(time.time() + exp_in)
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def assert_401(response, code: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == code
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_none_mode_needs_nothing(client):
    assert (await client.post(EXECUTE, json=seed_request(dry_run=True))).status_code == 200


async def test_api_key_mode(make_app):
    app = await make_app(auth_mode="api_key", api_key="s3cret-key")
    body = seed_request(dry_run=True)
    assert (await app.client.post(EXECUTE, json=body, headers=bearer("s3cret-key"))).status_code == 200
    assert_401(await app.client.post(EXECUTE, json=body), "auth.missing_credential")
    assert_401(await app.client.post(EXECUTE, json=body, headers=bearer("s3cret-kez")), "auth.invalid_credential")
    assert_401(await app.client.post(EXECUTE, json=body, headers={"Authorization": "Basic czNjcmV0"}), "auth.invalid_credential")
    # public routes stay public
    assert (await app.client.get("/health")).status_code == 200
    assert (await app.client.get("/api/v1/version")).status_code == 200
    assert_401(await app.client.get("/api/v1/models"), "auth.missing_credential")


async def test_jwt_mode(make_app):
    app = await make_app(auth_mode="jwt", jwt_secret_key=SECRET)
    body = seed_request(dry_run=True)
    assert (await app.client.post(EXECUTE, json=body, headers=bearer(token()))).status_code == 200
    assert_401(await app.client.post(EXECUTE, json=body), "auth.missing_credential")
    assert_401(await app.client.post(EXECUTE, json=body, headers=bearer(token(exp_in=-10))), "auth.credential_expired")
    assert_401(
        await app.client.post(EXECUTE, json=body, headers=bearer(token(secret="other-secret-of-sufficient-length!!"))),
        "auth.invalid_credential",
    )
    assert_401(await app.client.post(EXECUTE, json=body, headers=bearer(token(exp_in=None))), "auth.invalid_credential")
    assert_401(await app.client.post(EXECUTE, json=body, headers=bearer(token(user_id="bad id/.."))), "auth.invalid_credential")
    assert_401(await app.client.post(EXECUTE, json=body, headers=bearer("not.a.jwt")), "auth.invalid_credential")
    none_alg = jwt.encode({"user_id": "alice", "exp": int(time.time()) + 60}, key=None, algorithm="none")
    assert_401(await app.client.post(EXECUTE, json=body, headers=bearer(none_alg)), "auth.invalid_credential")


async def test_jwt_without_exp_when_allowed(make_app):
    app = await make_app(auth_mode="jwt", jwt_secret_key=SECRET, jwt_require_exp=False)
    response = await app.client.post(EXECUTE, json=seed_request(dry_run=True), headers=bearer(token(exp_in=None)))
    assert response.status_code == 200


async def test_callers_see_only_their_own_runs(make_app):
    app = await make_app(auth_mode="jwt", jwt_secret_key=SECRET)
    run = (await app.client.post(EXECUTE, json=seed_request(dry_run=True), headers=bearer(token("alice")))).json()
    url = f"/api/v1/runs/{run['pipeline_run_id']}"
    assert (await app.client.get(url, headers=bearer(token("alice")))).status_code == 200
    other = await app.client.get(url, headers=bearer(token("bob")))
    assert other.status_code == 404
    assert other.json()["code"] == "run.not_found"


async def test_the_same_run_id_from_two_callers_is_two_runs_and_no_leak(make_app):
    app = await make_app(auth_mode="jwt", jwt_secret_key=SECRET)
    alice = seed_request(dry_run=True, pipeline_run_id="shared-id-1")
    bob = seed_request(dry_run=True, pipeline_run_id="shared-id-1", inputs={"text": "bob's own words"})
    first = await app.client.post(EXECUTE, json=alice, headers=bearer(token("alice")))
    second = await app.client.post(EXECUTE, json=bob, headers=bearer(token("bob")))
    assert first.status_code == 200 and second.status_code == 200, second.text
    assert first.json()["pipeline_run_id"] == second.json()["pipeline_run_id"] == "shared-id-1"
    url = "/api/v1/runs/shared-id-1"
    seen_by_alice = (await app.client.get(url, headers=bearer(token("alice")))).json()
    seen_by_bob = (await app.client.get(url, headers=bearer(token("bob")))).json()
    assert "bob's own words" not in str(seen_by_alice) and "bob's own words" in str(seen_by_bob)


async def test_forwarded_identity(make_app):
    app = await make_app(trust_forwarded_identity_headers=True)
    body = seed_request(dry_run=True)
    ok = await app.client.post(EXECUTE, json=body, headers={"X-User-Id": "carol"})
    assert ok.status_code == 200
    run_url = f"/api/v1/runs/{ok.json()['pipeline_run_id']}"
    assert (await app.client.get(run_url, headers={"X-User-Id": "carol"})).status_code == 200
    assert (await app.client.get(run_url, headers={"X-User-Id": "dave"})).status_code == 404
    assert_401(await app.client.post(EXECUTE, json=body), "auth.missing_credential")
    assert_401(await app.client.post(EXECUTE, json=body, headers={"X-User-Id": "../etc"}), "auth.invalid_credential")


@pytest.mark.parametrize(
    "values",
    [
        {"auth_mode": "kerberos"},
        {"auth_mode": "api_key"},
        {"auth_mode": "jwt"},
        {"auth_mode": "api_key", "api_key": "k", "trust_forwarded_identity_headers": True},
        {"execution_mode": "temporal"},
        {"storage_backend": "s3"},
        {"completion_callback_secret": "  "},
    ],
)
def test_unsafe_configuration_stops_the_boot(values, tmp_path):
    with pytest.raises((ConfigurationError, ValueError)):
        Settings(data_dir=tmp_path, **values)
