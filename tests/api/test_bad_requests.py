"""Each bad input of the contract gets a clear 4xx problem document with the right code; nothing is lost."""

import pytest

from tests.support.bundles import SEED_BUNDLE, seed_request

EXECUTE = "/api/v1/pipeline/execute"


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code, problem
    assert problem["status"] == status
    for member in ("type", "title", "detail", "request_id"):
        assert problem[member], member
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text and "/site-packages/" not in response.text
    return problem


async def test_malformed_json(client):
    response = await client.post(EXECUTE, content=b'{"pipe_code": "x",', headers={"content-type": "application/json"})
    assert_problem(response, 422, "request.malformed")


async def test_body_that_is_not_an_object(client):
    assert_problem(await client.post(EXECUTE, json=["not", "an", "object"]), 422, "request.invalid")


async def test_wrong_field_types_and_unknown_fields(client):
    problem = assert_problem(await client.post(EXECUTE, json={"mthds_contents": SEED_BUNDLE}), 422, "request.invalid")
    assert problem["errors"][0]["location"]["path"] == ["body", "mthds_contents"]
    assert_problem(await client.post(EXECUTE, json={**seed_request(), "surprise": 1}), 422, "request.invalid")


async def test_neither_pipe_code_nor_bundle(client):
    assert_problem(await client.post(EXECUTE, json={"inputs": {"text": "x"}}), 422, "request.pipe_unspecified")


async def test_oversized_body_declared(make_app):
    app = await make_app(max_request_body_mib=0.01)
    big = seed_request(inputs={"text": "x" * 20_000})
    problem = assert_problem(await app.client.post(EXECUTE, json=big), 413, "request.too_large")
    assert problem["params"]["limit_bytes"] == int(0.01 * 1024 * 1024)
    assert (await app.client.post(EXECUTE, json=seed_request(dry_run=True))).status_code == 200


async def test_oversized_body_streamed_without_length(make_app):
    app = await make_app(max_request_body_mib=0.01)

    async def chunks():
        yield b'{"pipe_code": "summarize", "inputs": {"text": "'
        for _ in range(40):
            yield b"y" * 1000
        yield b'"}}'

    response = await app.client.post(EXECUTE, content=chunks(), headers={"content-type": "application/json"})
    assert_problem(response, 413, "request.too_large")


async def test_bad_toml_is_located(client):
    problem = assert_problem(await client.post(EXECUTE, json={"mthds_contents": ["domain = [broken"]}), 422, "method.invalid")
    assert problem["errors"][0]["code"] == "method.syntax"
    assert problem["errors"][0]["location"]["line"] == 1


async def test_unknown_pipe_type(client):
    bundle = SEED_BUNDLE.replace('type = "PipeLLM"', 'type = "PipeTeleport"')
    problem = assert_problem(await client.post(EXECUTE, json=seed_request(mthds_contents=[bundle])), 422, "method.invalid")
    assert problem["errors"][0]["code"] == "method.pipe_type_invalid"


async def test_unknown_concept(client):
    bundle = SEED_BUNDLE.replace('output = "Text"', 'output = "Unicorn"')
    problem = assert_problem(await client.post(EXECUTE, json=seed_request(mthds_contents=[bundle])), 422, "method.invalid")
    assert problem["errors"][0]["code"] == "method.concept_unresolved"
    assert problem["errors"][0]["location"]["pipe"] == "summarize"


async def test_unknown_pipe_code(client):
    problem = assert_problem(await client.post(EXECUTE, json=seed_request(pipe_code="nope")), 422, "request.pipe_not_found")
    assert problem["params"]["pipe"] == "nope"


async def test_pipe_code_alone_is_looked_up_in_the_server_library(client):
    # no LIBRARY_DIRS configured: the server library is empty, so the pipe is unknown (never another caller's bundle)
    assert_problem(await client.post(EXECUTE, json={"pipe_code": "summarize", "inputs": {"text": "x"}}), 422, "request.pipe_not_found")


async def test_missing_input(client):
    problem = assert_problem(await client.post(EXECUTE, json=seed_request(inputs={})), 422, "input.missing")
    assert problem["params"]["input"] == "text"


async def test_extra_input(client):
    problem = assert_problem(await client.post(EXECUTE, json=seed_request(inputs={"text": "a", "other": "b"})), 422, "input.unexpected")
    assert problem["params"]["input"] == "other"


async def test_wrong_input_structure(client):
    inputs = {"text": {"concept": "Number", "content": {"nope": True}}}
    problem = assert_problem(await client.post(EXECUTE, json=seed_request(inputs=inputs)), 422, "input.invalid")
    assert problem["pipeline_state"] == "FAILED"


@pytest.mark.parametrize(
    "inputs",
    [
        {"text": {"__class__": "os.system"}},
        {"text": {"concept": "Text", "content": {"deep": [{"__module__": "os"}]}}},
        {"text": [{"a": {"__kajson_class__": "x"}}]},
    ],
)
async def test_reserved_keys_are_refused_at_any_depth(client, stub, inputs):
    problem = assert_problem(await client.post(EXECUTE, json=seed_request(inputs=inputs)), 422, "input.reserved_key")
    assert "reserved key" in problem["detail"]
    assert stub.stats()["total_calls"] == 0


async def test_failed_run_is_recorded(client):
    problem = (await client.post(EXECUTE, json=seed_request(inputs={}))).json()
    run = (await client.get(f"/api/v1/runs/{problem['pipeline_run_id']}")).json()
    assert run["pipeline_state"] == "FAILED"
    assert run["error"]["code"] == "input.missing"


async def test_unknown_route_and_method(client):
    assert_problem(await client.get("/api/v1/nowhere"), 404, "route.not_found")
    assert_problem(await client.get(EXECUTE), 405, "route.method_not_allowed")


async def test_bad_run_id(client):
    assert_problem(await client.post(EXECUTE, json=seed_request(pipeline_run_id="bad id!")), 422, "request.invalid")
    response = await client.post(EXECUTE, json=seed_request(), headers={"Idempotency-Key": "bad key!"})
    assert_problem(response, 422, "request.invalid")
