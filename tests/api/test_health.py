"""Public routes and request ids."""

from pipelex_server.errors import SERVER_CODES


async def test_banner(client):
    body = (await client.get("/")).json()
    assert body["message"] == "Pipelex API"
    assert body["name"] == "pipelex-server"


async def test_liveness_and_readiness(client):
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["run_store"] == "ok" and checks["runtime"] == "ok"
    assert checks["inference"]["backends"] == ["openai"]


async def test_versions(client):
    body = (await client.get("/api/v1/version")).json()
    assert body["implementation"] == "pipelex-server"
    assert body["runtime_version"] == "0.92.2"
    assert body["protocol_version"].count(".") == 2


async def test_request_id_is_echoed_or_generated(client):
    echoed = await client.get("/health", headers={"X-Request-ID": "abc-123_x"})
    assert echoed.headers["x-request-id"] == "abc-123_x"
    generated = await client.get("/health")
    assert len(generated.headers["x-request-id"]) == 32
    hostile = await client.get("/health", headers={"X-Request-ID": "a b\\c"})
    assert hostile.headers["x-request-id"] != "a b\\c"


async def test_models_lists_the_deck_and_live_backends(client):
    body = (await client.get("/api/v1/models")).json()
    assert body["backends"]["enabled"] == ["openai"]
    assert body["backends"]["live"] is True
    names = {model["name"] for model in body["models"]}
    assert "writing-factual" in names
    assert body["aliases"]


async def test_openapi_documents_the_routes(client):
    spec = (await client.get("/openapi.json")).json()
    for path in ("/api/v1/pipeline/execute", "/api/v1/validate", "/api/v1/runs/{run_id}", "/health/ready", "/api/v1/models"):
        assert path in spec["paths"], path
    execute = spec["paths"]["/api/v1/pipeline/execute"]["post"]
    assert {"422", "413", "401", "502"} <= set(execute["responses"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_our_registry_codes_match_the_runtime_registry():
    from pipelex_server.engine.problems import registry_entry

    for code, (status, title, is_registry_code) in SERVER_CODES.items():
        registry_status, registry_title, _ = registry_entry(code)
        if is_registry_code:
            assert (status, title) == (registry_status, registry_title), code
        else:
            assert registry_status is None, f"{code} is a registry code now"
