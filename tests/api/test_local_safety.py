"""AUTH_MODE=none: foreign Host names (DNS rebinding) and cross-origin state changes are refused; identity is unique."""

import httpx
import pytest

from tests.support.bundles import seed_request
from tests.support.server import ServerProcess

EXECUTE = "/api/v1/pipeline/execute"
UPLOADS = "/api/v1/uploads"


def _client(handle, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=handle.app), base_url=f"http://{host}", timeout=60)


def _is_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert response.headers.get("x-request-id")


async def test_only_loopback_names_and_the_bind_address_by_default(make_app):
    handle = await make_app(allowed_hosts=[], host="10.1.2.3")
    for host in ("127.0.0.1:8081", "localhost", "LOCALHOST.:8081", "[::1]:8081", "10.1.2.3:8081"):
        async with _client(handle, host) as http:
            assert (await http.get("/health")).status_code == 200, host
    for host in ("attacker.example", "attacker.example:8081", "127.0.0.1.attacker.example", "0.0.0.0:8081"):
        async with _client(handle, host) as http:
            _is_problem(await http.get("/health"), 400, "request.host_not_allowed")
            _is_problem(await http.post(EXECUTE, json=seed_request(dry_run=True)), 400, "request.host_not_allowed")


async def test_a_wildcard_bind_is_not_an_allowed_name_and_star_allows_any(make_app):
    wildcard = await make_app(allowed_hosts=[], host="0.0.0.0")
    async with _client(wildcard, "0.0.0.0:8081") as http:
        _is_problem(await http.get("/health"), 400, "request.host_not_allowed")
    anything = await make_app(allowed_hosts=["*"])
    async with _client(anything, "whatever.example") as http:
        assert (await http.get("/health")).status_code == 200
    listed = await make_app(allowed_hosts=["api.internal", "Pipelex.Example.com"])
    async with _client(listed, "pipelex.example.com:443") as http:
        assert (await http.get("/health")).status_code == 200
    async with _client(listed, "localhost") as http:
        _is_problem(await http.get("/health"), 400, "request.host_not_allowed")


async def test_cross_origin_state_changes_are_refused(make_app):
    handle = await make_app(allowed_hosts=[], cors_allow_origins=["https://app.example"])
    async with _client(handle, "127.0.0.1:8081") as http:
        foreign = {"Origin": "https://evil.example"}
        _is_problem(await http.post(EXECUTE, json=seed_request(dry_run=True), headers=foreign), 403, "request.origin_not_allowed")
        _is_problem(
            await http.post(EXECUTE, json=seed_request(dry_run=True), headers={"Origin": "null"}), 403, "request.origin_not_allowed"
        )
        refused = await http.post(UPLOADS, files={"file": ("a.txt", b"hello", "text/plain")}, headers=foreign)
        _is_problem(refused, 403, "request.origin_not_allowed")
        assert (await http.get(UPLOADS)).json()["uploads"] == []  # nothing was stored
        # reads are not state changes; the server's own origin and the configured origins may change state
        assert (await http.get("/health", headers=foreign)).status_code == 200
        same = await http.post(EXECUTE, json=seed_request(dry_run=True), headers={"Origin": "http://127.0.0.1:8081"})
        assert same.status_code == 200, same.text
        listed = await http.post(EXECUTE, json=seed_request(dry_run=True), headers={"Origin": "https://app.example"})
        assert listed.status_code == 200, listed.text
        assert (await http.post(EXECUTE, json=seed_request(dry_run=True))).status_code == 200  # no Origin: not a browser


async def test_authenticated_modes_are_not_host_guarded(make_app):
    handle = await make_app(auth_mode="api_key", api_key="k" * 32, allowed_hosts=[])
    async with _client(handle, "pipelex.example.com") as http:
        response = await http.post(
            EXECUTE, json=seed_request(dry_run=True), headers={"Authorization": "Bearer " + "k" * 32, "Origin": "https://x.example"}
        )
        assert response.status_code == 200, response.text


async def test_two_forwarded_identities_are_refused(make_app):
    handle = await make_app(trust_forwarded_identity_headers=True)
    two = [("X-User-Id", "alice"), ("X-User-Id", "bob")]
    _is_problem(await handle.client.get("/api/v1/runs", headers=two), 400, "auth.ambiguous_identity")
    assert (await handle.client.get("/api/v1/runs", headers={"X-User-Id": "alice"})).status_code == 200


@pytest.mark.slow
def test_a_real_server_refuses_a_rebinding_host(tmp_path):
    with ServerProcess(tmp_path) as server, server.client() as http:
        response = http.get("/health", headers={"Host": f"rebind.attacker.example:{server.port}"})
        assert response.status_code == 400 and response.json()["code"] == "request.host_not_allowed"
        assert http.get("/health/ready").status_code == 200  # Host 127.0.0.1:port
        cross = http.post(EXECUTE, json=seed_request(dry_run=True), headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403 and cross.json()["code"] == "request.origin_not_allowed"
