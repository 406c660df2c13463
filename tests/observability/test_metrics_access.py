"""Who may read /metrics: METRICS_TOKEN when set; open under AUTH_MODE=none; loopback clients only otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

API_KEY = "an-api-key-long-enough-for-tests"
TOKEN = "a-metrics-token-for-tests"


@pytest.fixture
async def remote_client() -> AsyncIterator:
    """A client of an app as a non-loopback peer (10.1.2.3) would reach it."""
    clients: list[httpx.AsyncClient] = []

    def open_for(handle) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=handle.app, client=("10.1.2.3", 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)
        clients.append(client)
        return client

    yield open_for
    for client in clients:
        await client.aclose()


async def test_auth_none_serves_metrics_to_anyone_who_reaches_the_server(make_app, remote_client):
    app = await make_app()
    assert (await remote_client(app).get("/metrics")).status_code == 200


async def test_with_api_keys_and_no_token_only_loopback_clients_read_metrics(make_app, remote_client):
    app = await make_app(auth_mode="api_key", api_key=API_KEY)
    assert (await app.client.get("/metrics")).status_code == 200  # the ASGI test client is 127.0.0.1
    refused = await remote_client(app).get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "metrics.forbidden"
    assert "METRICS_TOKEN" in refused.json()["detail"]


async def test_a_metrics_token_is_required_from_everyone_when_set(make_app, remote_client):
    app = await make_app(auth_mode="api_key", api_key=API_KEY, metrics_token=TOKEN)
    remote = remote_client(app)
    assert (await app.client.get("/metrics")).status_code == 401
    wrong = await remote.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "auth.invalid_credential"
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    good = await remote.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert good.status_code == 200
    assert "pipelex_server_http_requests_total" in good.text


async def test_metrics_off_answer_404_and_are_not_counted(make_app):
    app = await make_app(metrics_enabled=False)
    response = await app.client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["code"] == "route.not_found"


async def test_metrics_are_not_in_the_openapi_document(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/metrics" not in paths
    assert "/api/v1/usage" in paths
