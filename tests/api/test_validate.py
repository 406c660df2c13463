"""POST /api/v1/validate: a verdict for any bundle text, cached by content hash."""

from tests.support.bundles import SEED_BUNDLE, SEQUENCE_BUNDLE, STRUCTURED_BUNDLE

VALIDATE = "/api/v1/validate"


async def test_a_valid_bundle_gets_its_blueprint_and_pipe_structures(client, stub):
    response = await client.post(VALIDATE, json={"mthds_contents": [STRUCTURED_BUNDLE]})
    assert response.status_code == 200, response.text
    verdict = response.json()
    assert verdict["success"] is True and verdict["errors"] == []
    assert verdict["pipelex_bundle_blueprint"]["domain"] == "contacts"
    structure = verdict["pipe_structures"]["contacts.extract_person"]
    assert structure["inputs"]["text"]["concept_code"] == "native.Text"
    assert structure["output"]["concept_code"] == "contacts.Person"
    schema = structure["output"]["json_schema"]
    assert set(schema["required"]) >= {"name", "age"}
    assert verdict["graph_spec"] is not None
    assert stub.stats()["total_calls"] == 0  # validation dry-runs: no provider is called


async def test_pipe_code_narrows_the_structures(client):
    verdict = (await client.post(VALIDATE, json={"mthds_contents": [SEQUENCE_BUNDLE], "pipe_code": "draft_card"})).json()
    assert verdict["success"] is True
    assert list(verdict["pipe_structures"]) == ["menus.draft_card"]


async def test_an_unknown_pipe_code_is_a_failed_verdict(client):
    verdict = (await client.post(VALIDATE, json={"mthds_contents": [SEED_BUNDLE], "pipe_code": "ghost"})).json()
    assert verdict["success"] is False
    assert verdict["errors"][0]["code"] == "request.pipe_not_found"


async def test_unparsable_toml_is_a_200_verdict_with_located_errors(client):
    response = await client.post(VALIDATE, json={"mthds_contents": ['domain = "x"\n[pipe.a\n']})
    assert response.status_code == 200
    verdict = response.json()
    assert verdict["success"] is False
    assert verdict["errors"][0]["code"] == "method.syntax"
    assert verdict["errors"][0]["location"]["line"] == 2
    assert verdict["pipelex_bundle_blueprint"] is None


async def test_semantic_errors_are_listed(client):
    bundle = SEED_BUNDLE.replace('output = "Text"', 'output = "Nowhere"')
    verdict = (await client.post(VALIDATE, json={"mthds_contents": [bundle]})).json()
    assert verdict["success"] is False
    assert [error["code"] for error in verdict["errors"]] == ["method.concept_unresolved"]


async def test_verdicts_are_cached_by_content(client):
    engine = client._transport.app.state.services.engine
    body = {"mthds_contents": [SEED_BUNDLE + "\n# cache probe\n"]}
    first = (await client.post(VALIDATE, json=body)).json()
    cached_before = len(engine.validator.verdicts)
    second = (await client.post(VALIDATE, json=body)).json()
    assert first == second
    assert len(engine.validator.verdicts) == cached_before
    other = {"mthds_contents": [SEED_BUNDLE + "\n# another probe\n"]}
    await client.post(VALIDATE, json=other)
    assert len(engine.validator.verdicts) == cached_before + 1


async def test_a_malformed_request_is_a_4xx(client):
    assert (await client.post(VALIDATE, json={"mthds_contents": []})).status_code == 422
    assert (await client.post(VALIDATE, json={"mthds_contents": "not a list"})).status_code == 422
    assert (await client.post(VALIDATE, content=b"{", headers={"content-type": "application/json"})).json()["code"] == "request.malformed"


async def test_cors_when_configured(make_app):
    app = await make_app(cors_allow_origins="https://app.example.com")
    preflight = await app.client.options(VALIDATE, headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"})
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    other = await app.client.options(VALIDATE, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers
