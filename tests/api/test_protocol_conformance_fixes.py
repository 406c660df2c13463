"""The /v1 answers the official-server conformance suite found differing, made to answer as the official server does
(tests/conformance/test_official_conformance.py compares them with the official server; these check the values, in
process): `crate_fingerprint` and the working memory's `absences` on execute answers, one category of the model deck,
the official refusals of a body with no method, a reserved key, malformed JSON and a validate with no source, and a
template step with no document engine. The /api/v1 routes keep their documented answers."""

from __future__ import annotations

import re
import uuid

from tests.conformance.test_official_conformance import TREE_WITH_TEMPLATE
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, seed_request

EXECUTE, VALIDATE = "/v1/execute", "/v1/validate"
API_EXECUTE, API_VALIDATE = "/api/v1/pipeline/execute", "/api/v1/validate"
JSON = {"content-type": "application/json"}

# the seed bundle with an optional second input: omitted, the run's working memory records its absence
OPTIONAL_BUNDLE = SEED_BUNDLE.replace('inputs = { text = "Text" }', 'inputs = { text = "Text", tone = "Text?" }').replace(
    "@text", "@text\\n{% if tone %}Tone: $tone{% endif %}"
)


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    problem = response.json()
    assert problem["code"] == code, problem
    for member in ("domain", "retry", "next_step"):  # a protocol reader needs them
        assert problem[member], member
    return problem


# ---------------------------------------------------------------- execute answers


async def test_execute_answers_carry_the_crate_fingerprint_on_both_routes_and_on_replay(client):
    first = await client.post(EXECUTE, json={"files": {"hello.mthds": SEED_BUNDLE}, "inputs": {"text": SEED_TEXT}})
    assert first.status_code == 200, first.text
    fingerprint = first.json()["crate_fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint), fingerprint
    # the same method sent otherwise (inline, on the seed route) is the same crate
    seed_route = await client.post(API_EXECUTE, json=seed_request())
    assert seed_route.status_code == 200, seed_route.text
    assert seed_route.json()["crate_fingerprint"] == fingerprint
    # a method whose meaning differs is another crate
    reworded = SEED_BUNDLE.replace('description = "', 'description = "Reworded: ', 1)
    other = await client.post(EXECUTE, json={"mthds_contents": [reworded], "pipe_code": "summarize", "inputs": {"text": SEED_TEXT}})
    assert other.status_code == 200, other.text
    assert re.fullmatch(r"[0-9a-f]{64}", other.json()["crate_fingerprint"]) and other.json()["crate_fingerprint"] != fingerprint
    # an idempotent replay answers from the stored run, fingerprint included
    key = {"Idempotency-Key": f"fp-{uuid.uuid4().hex[:12]}"}
    body = {"files": {"hello.mthds": SEED_BUNDLE}, "inputs": {"text": SEED_TEXT}}
    ran = await client.post(EXECUTE, json=body, headers=key)
    replayed = await client.post(EXECUTE, json=body, headers=key)
    assert ran.status_code == replayed.status_code == 200, replayed.text
    assert replayed.json()["pipeline_run_id"] == ran.json()["pipeline_run_id"]
    assert replayed.json()["crate_fingerprint"] == ran.json()["crate_fingerprint"] == fingerprint


async def test_the_working_memory_keeps_the_runtimes_absences(client):
    body = {"mthds_contents": [OPTIONAL_BUNDLE], "pipe_code": "summarize", "inputs": {"text": SEED_TEXT}}
    response = await client.post(EXECUTE, json=body)
    assert response.status_code == 200, response.text
    memory = response.json()["pipe_output"]["working_memory"]
    assert set(memory) == {"root", "aliases", "absences"}
    assert memory["absences"]["tone"]["variable_name"] == "tone", memory["absences"]
    full = await client.post(EXECUTE, json={**body, "inputs": {"text": SEED_TEXT, "tone": "dry"}})
    assert full.status_code == 200, full.text
    assert full.json()["pipe_output"]["working_memory"]["absences"] == {}


# ---------------------------------------------------------------- the model deck


async def test_one_category_of_the_deck_carries_only_its_aliases_and_waterfalls(client):
    deck = (await client.get("/v1/models")).json()
    assert len(deck["aliases"]) > 1 and len(deck["waterfalls"]) > 1  # the whole deck keeps every category
    for category in ("llm", "img_gen"):
        narrowed = await client.get("/v1/models", params={"type": category})
        assert narrowed.status_code == 200, narrowed.text
        answer = narrowed.json()
        assert answer["models"] and {model["type"] for model in answer["models"]} == {category}
        assert set(answer["aliases"]) == {category} and answer["aliases"][category] == deck["aliases"][category]
        assert set(answer["waterfalls"]) == {category} and answer["waterfalls"][category] == deck["waterfalls"][category]


# ---------------------------------------------------------------- request refusals


async def test_a_run_with_no_method_names_pipe_code_on_v1_and_stays_pipe_unspecified_on_api_v1(client, stub):
    problem = _problem(await client.post(EXECUTE, json={"inputs": {}}), 422, "request.invalid")
    assert problem["params"] == {"field": "pipe_code"}
    assert "pipe_code" in problem["next_step"]["detail"]
    seed_route = await client.post(API_EXECUTE, json={"inputs": {"text": "x"}})
    assert seed_route.status_code == 422 and seed_route.json()["code"] == "request.pipe_unspecified", seed_route.text
    assert stub.stats()["total_calls"] == 0


async def test_a_reserved_key_is_the_registrys_security_code_on_v1_and_input_reserved_key_on_api_v1(client, stub):
    body = seed_request(inputs={"text": {"concept": "Text", "content": {"nested": [{"__class__": "os.system"}]}}})
    problem = _problem(await client.post(EXECUTE, json=body), 422, "pipelex.security.reserved_key")
    assert problem["params"] == {"keys": ["__class__"]}
    assert problem["type"] == "https://docs.pipelex.com/errors/pipelex.security.reserved_key"
    assert problem["title"] == "The request carries a reserved key"
    assert (problem["domain"], problem["retry"], problem["next_step"]["kind"]) == ("input", "no", "change_input")
    assert "inputs.text.content.nested.0.__class__" in problem["detail"]  # where it is, in words
    assert "location" not in problem  # as the official server answers it
    module = await client.post(EXECUTE, json=seed_request(inputs={"text": {"__module__": "os"}}))
    assert _problem(module, 422, "pipelex.security.reserved_key")["params"] == {"keys": ["__module__"]}
    seed_route = await client.post(API_EXECUTE, json=body)
    assert seed_route.status_code == 422, seed_route.text
    assert seed_route.json()["code"] == "input.reserved_key"
    assert seed_route.json()["location"]["path"] == ["body", "inputs", "text", "content", "nested", 0, "__class__"]
    assert stub.stats()["total_calls"] == 0


async def test_malformed_json_says_not_json_with_where_the_decoder_stopped(client):
    for route in (EXECUTE, "/v1/start", VALIDATE):
        problem = _problem(await client.post(route, content=b'{"pipe_code": ', headers=JSON), 422, "request.malformed")
        assert problem["params"] == {"reason": "not_json"}, problem
        assert "errors" not in problem
        assert "character 14" in problem["detail"], problem["detail"]
    # the hostile-value refusals keep their located problem (a NaN is not JSON either)
    nan = await client.post(EXECUTE, content=b'{"pipe_code": "x", "inputs": {"v": NaN}}', headers=JSON)
    located = _problem(nan, 422, "request.malformed")
    assert located["params"]["reason"] == "not_json" and located["location"]["path"] == ["body", "inputs", "v"]
    # /api/v1 answers as it did
    seed_route = await client.post(API_EXECUTE, content=b'{"pipe_code": ', headers=JSON)
    assert seed_route.status_code == 422 and seed_route.json()["code"] == "request.malformed", seed_route.text


async def test_a_validate_with_no_method_locates_the_field_as_the_official_server_does(client):
    problem = _problem(await client.post(VALIDATE, json={}), 422, "request.invalid")
    assert problem["params"] == {"field": "mthds_contents"}
    assert problem["location"] == {"field": "mthds_contents"}


# ---------------------------------------------------------------- no verdict: a template step with no document engine


async def test_a_template_step_with_no_document_engine_is_no_verdict_on_v1_and_an_invalid_verdict_on_api_v1(client):
    problem = _problem(await client.post(VALIDATE, json={"files": TREE_WITH_TEMPLATE}), 501, "pipelex.docgen.engine_unavailable")
    assert problem["params"] == {"format": "pdf"} and problem["domain"] == "operator"
    # the same tree without its template step validates: the 501 is the step's, not the tree's
    without_step = {path: entry for path, entry in TREE_WITH_TEMPLATE.items() if path not in ("cards.mthds", "templates/card.html")}
    without_step["METHODS.toml"] = without_step["METHODS.toml"].split("\n[exports.cards]")[0]
    valid = await client.post(VALIDATE, json={"files": without_step})
    assert valid.status_code == 200 and valid.json()["is_valid"] is True, valid.text
    # /api/v1/validate keeps a verdict for any method: invalid, carrying the same problem
    verdict = await client.post(API_VALIDATE, json={"files": TREE_WITH_TEMPLATE})
    assert verdict.status_code == 200, verdict.text
    assert verdict.json()["success"] is False and verdict.json()["problem"]["code"] == "pipelex.docgen.engine_unavailable"
