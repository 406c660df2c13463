"""The crate and tool routes in-process: `/v1/resolve`, `/v1/pipe-io`, `/v1/codegen`, `/v1/lint`, `/v1/format` and
`GET /v1/models/check`, on good input (the official answers' shapes) and bad (a 4xx protocol problem naming the field or
file, never a 5xx), authenticated and caller-scoped."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from pipelex_server.blobs import sha256_of
from pipelex_server.engine import codegen as crates
from tests.support.bundles import SEED_BUNDLE, package_files

SECRET = "tool-routes-secret-that-is-long-enough-for-hs256"
FILES = {"hello.mthds": SEED_BUNDLE}
TREE = package_files("greeting_package")
MANIFEST, GREETING, WORDING = TREE["METHODS.toml"], TREE["greeting.mthds"], TREE["wording.mthds"]
BAD_TOML = 'domain = "broken"\n[pipe.x\ntype = "PipeLLM"\n'
# Past the MTHDS linter's native parser: it reads on after the unclosed string and recurses once per bracket.
PARSER_CRASHER = 'a = "unclosed\nb = ' + "[" * 200_000


def assert_problem(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code, problem
    assert {"domain", "retry", "next_step"} <= problem.keys(), problem  # the protocol members
    if field is not None:
        assert problem["params"]["field"] == field, problem
    return problem


# -- /v1/resolve ------------------------------------------------------------------------------------------------------


async def test_resolve_answers_the_normalized_crate_of_a_tree(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/resolve", json={"files": TREE})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["is_valid"] is True and answer["message"]
    crate = answer["crate"]
    assert sorted(crate["pipes"]) == ["greeting.draft", "greeting.greet", "wording.polish"]
    assert crate["source_map"]["wording.polish"] == "wording.mthds"  # the tree path, never a path on this host
    assert len(crate["fingerprint"]) == 64
    again = await client.post("/v1/resolve", json={"files": TREE})
    assert again.json()["crate"]["fingerprint"] == crate["fingerprint"]


async def test_resolve_takes_mthds_contents_too(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/resolve", json={"mthds_contents": [SEED_BUNDLE]})
    assert response.status_code == 200, response.text
    assert list(response.json()["crate"]["pipes"]) == ["hello.summarize"]


DEPENDENCY_PACKAGE = "github.com/pipelex-server-tests/tools/shouting"
DEPENDENCY_ADDRESS = DEPENDENCY_PACKAGE + "/shouting"  # the key the run routes read a dependency under (sources.py)
DEPENDENCY = {
    "METHODS.toml": f"""[package]
address = "{DEPENDENCY_PACKAGE}"
version = "1.0.0"
description = "A dependency: it exports one pipe"

[exports.shouting]
pipes = ["shout"]
""",
    "shout.mthds": """domain = "shouting"

[pipe.shout]
type = "PipeLLM"
description = "Shout a text"
inputs = { text = "Text" }
output = "Text"
prompt = "Shout: $text"
""",
}
CALLER_TREE = {
    "METHODS.toml": """[package]
address = "github.com/pipelex-server-tests/tools/caller"
version = "1.0.0"
description = "Calls its dependency's exported pipe"
main_pipe = "relay"

[exports.relay]
pipes = ["relay"]
""",
    "relay.mthds": f"""domain = "relay"

[pipe.relay]
type = "PipeSequence"
description = "Relay a text through the dependency"
inputs = {{ text = "Text" }}
output = "Text"
steps = [{{ pipe = "{DEPENDENCY_ADDRESS}->shouting.shout", result = "shouted" }}]
""",
}


async def test_a_dependency_sent_beside_the_tree_resolves_and_an_absent_one_is_the_invalid_verdict(client: httpx.AsyncClient) -> None:
    body = {"files": CALLER_TREE, "dependencies": {DEPENDENCY_ADDRESS: DEPENDENCY}}
    resolved = (await client.post("/v1/resolve", json=body)).json()
    assert resolved.get("is_valid") is True and "relay.relay" in resolved["crate"]["pipes"], resolved
    described = (await client.post("/v1/pipe-io", json=body)).json()
    assert described["pipe_ref"] == "relay.relay" and list(described["input_form"]) == ["relay.relay"], described
    alone = (await client.post("/v1/resolve", json={"files": CALLER_TREE})).json()
    assert alone["is_valid"] is False and alone["errors"], alone  # resolution is static: nothing is fetched


async def test_a_method_that_does_not_resolve_is_a_200_invalid_verdict_naming_the_file(client: httpx.AsyncClient) -> None:
    for route, extra in (("/v1/resolve", {}), ("/v1/pipe-io", {}), ("/v1/codegen", {"kind": "types", "target": "ts-zod"})):
        response = await client.post(route, json={"files": {"bad.mthds": BAD_TOML}, **extra})
        assert response.status_code == 200, response.text
        verdict = response.json()
        assert verdict["is_valid"] is False and verdict["message"], verdict
        assert verdict["errors"][0]["code"] == "method.syntax"
        assert verdict["errors"][0]["location"]["file"] == "bad.mthds"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({}, 422, "request.invalid", "files"),
        ({"files": FILES, "mthds_contents": [SEED_BUNDLE]}, 422, "request.invalid", "files"),
        ({"method_ref": "github.com/acme/methods@v1", "files": FILES}, 422, "request.invalid", "method_ref"),
        ({"files": FILES, "read_scope": "someone-else"}, 422, "request.unsupported", "read_scope"),
        ({"mthds_contents": [SEED_BUNDLE], "dependencies": {"github.com/acme/dep": FILES}}, 422, "request.invalid", "dependencies"),
        ({"files": "hello"}, 422, "request.invalid", None),
        ({"files": {"../escape.mthds": SEED_BUNDLE}}, 422, "security.input_path_refused", None),
        ({"files": {**FILES, "steps.py": "import os\n"}}, 422, "pipelex.deployment.custom_code_requires_sandbox", None),
        ({"files": {**FILES, "METHODS.toml": "[package\n"}}, 422, "method.package_invalid", None),
        ({"files": {"hello.mthds": {"sha256": "0" * 64, "size": 3}}}, 422, "request.blobs_missing", "files"),
    ],
    ids=[
        "no-source",
        "both-sources",
        "method-ref-beside-files",
        "read-scope",
        "dependencies-without-files",
        "files-not-a-map",
        "path-escape",
        "python",
        "bad-manifest",
        "blob",
    ],
)
async def test_a_crate_request_that_cannot_get_a_verdict_is_a_4xx_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    for route in ("/v1/resolve", "/v1/pipe-io"):
        assert_problem(await client.post(route, json=body), status, code, field)
    assert (await client.post("/v1/resolve", json={"files": FILES})).status_code == 200  # still serving


@pytest.mark.parametrize(
    "body",
    [{"files": {}}, {"mthds_contents": []}, {"mthds_contents": [""]}, {"files": {"empty.mthds": ""}}, {"files": {"notes.md": "hi"}}],
    ids=["empty-files", "empty-contents", "empty-bundle", "empty-file", "no-bundle"],
)
async def test_an_empty_method_is_a_verdict_or_a_4xx_never_a_5xx(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    for route in ("/v1/resolve", "/v1/pipe-io"):
        response = await client.post(route, json=body)
        if response.status_code == 200:
            assert response.json()["is_valid"] is False and response.json()["errors"], response.text
        else:
            assert 400 <= response.status_code < 500 and response.json()["code"], response.text


async def test_no_written_tree_outlives_its_answer(client: httpx.AsyncClient) -> None:
    from pipelex_server.engine.method_tree import trees_base_dir

    before = set(trees_base_dir().iterdir())
    await client.post("/v1/resolve", json={"files": TREE, "method_id": None})
    await client.post("/v1/pipe-io", json={"files": TREE, "pipe_ref": "nope"})  # refused mid-projection
    await client.post("/v1/codegen", json={"files": {"bad.mthds": BAD_TOML}, "kind": "types", "target": "ts-zod"})
    assert set(trees_base_dir().iterdir()) - before == set()


async def test_a_slow_resolution_is_cut_at_the_time_limit(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crates, "CRATE_TIME_LIMIT_SECONDS", 0)
    response = await client.post("/v1/resolve", json={"files": FILES})
    assert_problem(response, 503, "runtime.unavailable")
    assert response.headers["Retry-After"] == str(crates.CRATE_RETRY_AFTER_SECONDS)


# -- /v1/pipe-io ------------------------------------------------------------------------------------------------------


async def test_pipe_io_describes_the_manifests_main_pipe_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/pipe-io", json={"files": TREE})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["pipe_ref"], answer["default_pipe_ref"]) == ("greeting.greet", "greeting.greet")
    for artifact in ("pipe_io_contracts", "input_form", "output_form"):
        assert list(answer[artifact]) == ["greeting.greet"]
    assert list(answer["pipe_io_contracts"]["greeting.greet"]["inputs"]) == ["name"]
    assert answer["input_form"]["greeting.greet"]["fields"][0]["name"] == "name"
    assert answer["pending_signatures"] == [] and answer["is_runnable"] is True
    assert "files" not in answer


async def test_pipe_io_selects_a_bare_code_describes_every_pipe_and_echoes_the_bundles(client: httpx.AsyncClient) -> None:
    answer = (await client.post("/v1/pipe-io", json={"files": TREE, "pipe_ref": "polish"})).json()
    assert answer["pipe_ref"] == "wording.polish" and list(answer["output_form"]) == ["wording.polish"]
    answer = (await client.post("/v1/pipe-io", json={"files": TREE, "all_pipes": True, "include_files": True})).json()
    assert sorted(answer["pipe_io_contracts"]) == ["greeting.draft", "greeting.greet", "wording.polish"]
    assert answer["files"] == {"greeting.mthds": GREETING, "wording.mthds": WORDING}
    # a method with no entry pipe is still described whole
    answer = (await client.post("/v1/pipe-io", json={"files": {"w.mthds": WORDING}, "all_pipes": True})).json()
    assert (answer["pipe_ref"], answer["default_pipe_ref"], list(answer["input_form"])) == (None, None, ["wording.polish"])


@pytest.mark.parametrize(
    ("body", "code", "params"),
    [
        ({"files": TREE, "pipe_ref": "nope"}, "request.pipe_not_found", {"pipe": "nope"}),
        ({"files": {"w.mthds": WORDING}}, "request.pipe_unspecified", {"candidates": ["wording.polish"]}),
        (
            {"files": {"a.mthds": SEED_BUNDLE, "b.mthds": GREETING.replace('"wording.polish"', '"draft"')}},
            "request.pipe_unspecified",
            {"candidates": ["greeting.greet", "hello.summarize"]},
        ),
        (
            {"files": {**TREE, "METHODS.toml": MANIFEST.replace('"greet"', '"gone"')}},
            "method.pipe_unresolved",
            {"missing": "gone"},
        ),
    ],
    ids=["unknown-ref", "no-entry-pipe", "two-main-pipes", "manifest-main-pipe-missing"],
)
async def test_pipe_io_refuses_a_selection_with_the_code_of_who_must_act(
    client: httpx.AsyncClient, body: dict[str, Any], code: str, params: dict[str, Any]
) -> None:
    problem = assert_problem(await client.post("/v1/pipe-io", json=body), 422, code)
    assert params.items() <= problem["params"].items(), problem


# -- /v1/codegen ------------------------------------------------------------------------------------------------------


async def test_codegen_projects_every_target_the_runtime_offers(client: httpx.AsyncClient) -> None:
    targets = crates.codegen_choices()["target"]
    assert {"ts-zod", "python-pydantic", "python-structures"} <= set(targets)
    fingerprint = (await client.post("/v1/resolve", json={"files": FILES})).json()["crate"]["fingerprint"]
    for target in targets:
        response = await client.post("/v1/codegen", json={"files": FILES, "kind": "types", "target": target})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["is_valid"], answer["kind"], answer["target"]) == (True, "types", target)
        assert answer["crate_fingerprint"] == fingerprint and answer["lock_filename"] == "codegen.lock"
        assert answer["artifacts"] and all(f"crate_fingerprint: {fingerprint}" in item["content"] for item in answer["artifacts"])
        assert all(item["path"] in answer["lock"] for item in answer["artifacts"])


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"kind": "types", "target": "cobol"}, "target"),
        ({"kind": "inputs", "target": "ts-zod"}, "kind"),
        ({"kind": "types", "target": "ts-zod", "pipe_ref": "hello.summarize"}, "pipe_ref"),
        ({"target": "ts-zod"}, None),
    ],
    ids=["unknown-target", "unknown-kind", "pipe-ref-on-types", "no-kind"],
)
async def test_codegen_refuses_what_it_cannot_project_naming_the_field(
    client: httpx.AsyncClient, extra: dict[str, Any], field: str | None
) -> None:
    problem = assert_problem(await client.post("/v1/codegen", json={"files": FILES, **extra}), 422, "request.invalid", field)
    if field is None:
        assert problem["errors"][0]["location"]["path"] == ["body", "kind"]


# -- /v1/lint, /v1/format ---------------------------------------------------------------------------------------------


async def test_lint_and_format_answer_verdicts_for_any_text(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/lint", json={"content": SEED_BUNDLE, "source": "hello.mthds"})).json() == {"diagnostics": []}
    broken = (await client.post("/v1/lint", json={"content": BAD_TOML})).json()["diagnostics"]
    assert broken and broken[0]["kind"] == "syntax" and broken[0]["range"]["start_line"] == 2
    formatted = (await client.post("/v1/format", json={"content": SEED_BUNDLE})).json()
    assert formatted["changed"] is True and formatted["formatted"].startswith('domain    = "hello"')
    again = (await client.post("/v1/format", json={"content": formatted["formatted"]})).json()
    assert (again["changed"], again["formatted"]) == (False, formatted["formatted"])
    unparsable = (await client.post("/v1/format", json={"content": BAD_TOML})).json()
    assert (unparsable["changed"], unparsable["formatted"]) == (False, BAD_TOML) and unparsable["diagnostics"]


@pytest.mark.parametrize(
    ("route", "body", "code", "field"),
    [
        ("/v1/lint", {}, "request.invalid", None),
        ("/v1/lint", {"content": "x" * (1024 * 1024 + 1)}, "request.invalid", None),
        ("/v1/lint", {"content": "a = " + "[" * 500 + "]" * 500}, "request.too_deeply_nested", None),
        ("/v1/lint", {"content": PARSER_CRASHER}, "request.invalid", "content"),
        ("/v1/format", {"content": PARSER_CRASHER}, "request.invalid", "content"),
        ("/v1/format", {"content": SEED_BUNDLE, "options": {"column_width": "wide"}}, "request.invalid", "options"),
        ("/v1/format", {"content": SEED_BUNDLE, "options": {"nope": 1}}, "request.invalid", "options"),
    ],
    ids=["no-content", "too-large", "too-deep", "lint-parser-crash", "format-parser-crash", "bad-option", "unknown-option"],
)
async def test_lint_and_format_refuse_bad_input_and_keep_serving(
    client: httpx.AsyncClient, route: str, body: dict[str, Any], code: str, field: str | None
) -> None:
    assert_problem(await client.post(route, json=body), 422, code, field)
    assert (await client.post("/v1/lint", json={"content": SEED_BUNDLE})).json() == {"diagnostics": []}


# -- /v1/models/check -------------------------------------------------------------------------------------------------


async def test_models_check_answers_a_verdict_whatever_the_resolution(client: httpx.AsyncClient) -> None:
    deck = (await client.get("/v1/models")).json()
    alias = next(iter(deck["aliases"]["llm"]))
    verdict = (await client.get("/v1/models/check", params={"reference": f"  @{alias} "})).json()
    assert (verdict["reference"], verdict["kind"], verdict["resolution"]) == (f"@{alias}", "alias", "resolved")
    assert verdict["matches"] and verdict["matches"][0]["category"] == "llm"
    in_llm = (await client.get("/v1/models/check", params={"reference": f"@{alias}", "type": "llm"})).json()
    assert in_llm["category"] == "llm" and in_llm["resolution"] == "resolved"
    missing = (await client.get("/v1/models/check", params={"reference": "no-such-model-anywhere"})).json()
    assert (missing["kind"], missing["resolution"], missing["matches"]) == ("handle", "not_found", [])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "reference"),
        ("reference=", "reference"),
        ("reference=%20%20", "reference"),
        ("reference=alias:", "reference"),
        ("reference=x&type=", "type"),
        ("reference=$", "reference"),
        ("reference=" + "a" * 200, "reference"),
        ("reference=x&reference=y", "reference"),
        ("reference=x&type=colour", "type"),
        ("reference=x&type=llm&type=extract", "type"),
    ],
    ids=[
        "missing",
        "empty",
        "blank",
        "namespace-alone",
        "empty-type",
        "sigil-alone",
        "too-long",
        "repeated",
        "unknown-type",
        "repeated-type",
    ],
)
async def test_models_check_refuses_a_reference_it_cannot_judge(client: httpx.AsyncClient, query: str, field: str) -> None:
    problem = assert_problem(await client.get(f"/v1/models/check?{query}"), 422, "request.invalid")
    named = problem.get("params", {}).get("field") or problem["errors"][0]["location"]["path"][-1]
    assert named == field, problem


# -- auth, scope, documentation ---------------------------------------------------------------------------------------


def bearer(user_id: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode({"user_id": user_id, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")}


async def test_every_tool_route_needs_a_caller_and_reads_only_its_blobs(make_app: Any) -> None:
    app = await make_app(auth_mode="jwt", jwt_secret_key=SECRET)
    calls = [
        ("POST", "/v1/resolve", {"files": FILES}),
        ("POST", "/v1/pipe-io", {"files": FILES}),
        ("POST", "/v1/codegen", {"files": FILES, "kind": "types", "target": "ts-zod"}),
        ("POST", "/v1/lint", {"content": SEED_BUNDLE}),
        ("POST", "/v1/format", {"content": SEED_BUNDLE}),
        ("GET", "/v1/models/check?reference=x", None),
    ]
    for method, path, body in calls:
        assert_problem(await app.client.request(method, path, json=body), 401, "auth.missing_credential")
        assert (await app.client.request(method, path, json=body, headers=bearer("alice"))).status_code == 200, path
    data = SEED_BUNDLE.replace("hello", "scoped").encode()
    await app.services.engine.blobs.put("alice", data)
    hashed = {"files": {"scoped.mthds": {"sha256": sha256_of(data), "size": len(data)}}}
    own = await app.client.post("/v1/resolve", json=hashed, headers=bearer("alice"))
    assert own.status_code == 200 and "scoped.summarize" in own.json()["crate"]["pipes"], own.text
    assert_problem(await app.client.post("/v1/resolve", json=hashed, headers=bearer("bob")), 422, "request.blobs_missing", "files")


async def test_openapi_documents_the_tool_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, method in (
        ("/v1/resolve", "post"),
        ("/v1/pipe-io", "post"),
        ("/v1/codegen", "post"),
        ("/v1/lint", "post"),
        ("/v1/format", "post"),
        ("/v1/models/check", "get"),
    ):
        operation = paths[path][method]
        assert operation["summary"] and "422" in operation["responses"], path
