"""POST /api/v1/build/{inputs,output,runner}: every artefact is used for real, not only looked at."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import jsonschema
import pytest

from tests.support.bundles import (
    BATCH_BUNDLE,
    CONDITION_BUNDLE,
    PARALLEL_BUNDLE,
    SEED_BUNDLE,
    SEQUENCE_BUNDLE,
    STRUCTURED_BUNDLE,
    main_content,
)
from tests.support.server import ServerProcess

INPUTS = "/api/v1/build/inputs"
OUTPUT = "/api/v1/build/output"
RUNNER = "/api/v1/build/runner"
EXECUTE = "/api/v1/pipeline/execute"

# Fixed-count input and output: the runtime's own template shows one item, which a run refuses.
FIXED_BUNDLE = """domain = "pairs"
main_pipe = "compare"

[concept.Verdict]
description = "Which of two texts is better"

[concept.Verdict.structure]
winner = { type = "integer", description = "1 or 2", required = true }
reasons = { type = "list", item_type = "text", description = "Why" }

[pipe.compare]
type = "PipeLLM"
description = "Compare two texts, three times"
inputs = { texts = "Text[2]" }
output = "Verdict[3]"
prompt = "Compare these:\\n@texts"
"""

NO_INPUT_BUNDLE = """domain = "greet"
main_pipe = "hello"

[pipe.hello]
type = "PipeLLM"
description = "Say hello"
output = "Text"
prompt = "Say hello"
"""

# A condition whose branches produce different concepts: the output is native.Anything.
ANYTHING_BUNDLE = """domain = "pets"
main_pipe = "pick"

[concept.Cat]
description = "A cat"

[concept.Cat.structure]
name = { type = "text", description = "Its name", required = true }

[pipe.pick]
type = "PipeCondition"
description = "Cats or a text"
inputs = { text = "Text" }
output = "Anything"
expression = "text.text"
default_outcome = "fail"

[pipe.pick.outcomes]
cats = "make_cats"
text = "make_text"

[pipe.make_cats]
type = "PipeLLM"
description = "Three cats"
inputs = { text = "Text" }
output = "Cat[3]"
prompt = "Three cats about $text"

[pipe.make_text]
type = "PipeLLM"
description = "A text"
inputs = { text = "Text" }
output = "Text"
prompt = "A text about $text"
"""

BUNDLES = {
    "seed": SEED_BUNDLE,
    "structured": STRUCTURED_BUNDLE,
    "condition": CONDITION_BUNDLE,
    "batch": BATCH_BUNDLE,
    "parallel": PARALLEL_BUNDLE,
    "sequence": SEQUENCE_BUNDLE,
    "fixed": FIXED_BUNDLE,
    "anything": ANYTHING_BUNDLE,
}


async def post_ok(client, path: str, body: dict) -> dict:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["success"] is True and answer["message"]
    return answer


async def dry_run(client, bundle: str, inputs: dict, pipe_code: str | None = None) -> dict:
    response = await client.post(EXECUTE, json={"mthds_contents": [bundle], "pipe_code": pipe_code, "inputs": inputs, "dry_run": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pipeline_state"] == "COMPLETED"
    return body


def library_count() -> int:
    from pipelex.interpreter_hub import get_library_manager

    return len(get_library_manager()._libraries)


# ---------------------------------------------------------------- inputs


@pytest.mark.parametrize("name", list(BUNDLES))
async def test_the_json_inputs_template_runs_as_is(client, stub, name):
    bundle = BUNDLES[name]
    answer = await post_ok(client, INPUTS, {"mthds_contents": [bundle], "format": "json"})
    template = answer["inputs_template"]
    assert isinstance(template, dict) and template
    assert answer["format"] == "json" and "." in answer["pipe_code"]
    await dry_run(client, bundle, template)
    assert stub.stats()["total_calls"] == 0


async def test_templates_have_the_declared_shapes(client):
    condition = await post_ok(client, INPUTS, {"mthds_contents": [CONDITION_BUNDLE], "format": "json"})
    assert condition["pipe_code"] == "parcels.route"
    assert set(condition["inputs_template"]["parcel"]) == {"size", "address"}  # a structured input: its fields
    batch = await post_ok(client, INPUTS, {"mthds_contents": [BATCH_BUNDLE], "format": "json"})
    assert isinstance(batch["inputs_template"]["crates"], list)
    fixed = await post_ok(client, INPUTS, {"mthds_contents": [FIXED_BUNDLE], "format": "json"})
    assert len(fixed["inputs_template"]["texts"]) == 2


async def test_pipe_code_selects_another_pipe(client):
    answer = await post_ok(client, INPUTS, {"mthds_contents": [SEQUENCE_BUNDLE], "pipe_code": "draft_card", "format": "json"})
    assert answer["pipe_code"] == "menus.draft_card"
    assert list(answer["inputs_template"]) == ["dishes"]
    await dry_run(client, SEQUENCE_BUNDLE, answer["inputs_template"], pipe_code="draft_card")


@pytest.mark.parametrize("name", list(BUNDLES))
async def test_the_toml_template_parses_to_the_json_one(client, name):
    body = {"mthds_contents": [BUNDLES[name]]}
    toml_answer = await post_ok(client, INPUTS, {**body, "format": "toml"})
    json_answer = await post_ok(client, INPUTS, {**body, "format": "json"})
    assert toml_answer["format"] == "toml" and isinstance(toml_answer["inputs_template"], str)
    assert "# concept:" in toml_answer["inputs_template"]
    assert tomllib.loads(toml_answer["inputs_template"]) == json_answer["inputs_template"]


async def test_a_pipe_without_inputs_gets_an_empty_template(client):
    as_json = await post_ok(client, INPUTS, {"mthds_contents": [NO_INPUT_BUNDLE], "format": "json"})
    assert as_json["inputs_template"] == {} and "no inputs" in as_json["message"]
    as_toml = await post_ok(client, INPUTS, {"mthds_contents": [NO_INPUT_BUNDLE], "format": "toml"})
    assert as_toml["inputs_template"] == ""
    await dry_run(client, NO_INPUT_BUNDLE, as_json["inputs_template"])


# ---------------------------------------------------------------- output


def import_module_from(source: str, directory: Path):
    path = directory / f"built_{uuid.uuid4().hex}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import does: pydantic resolves the postponed annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(BUNDLES))
async def test_schema_example_and_classes_agree_with_each_other_and_with_a_run(client, tmp_path, name):
    bundle = BUNDLES[name]
    body = {"mthds_contents": [bundle]}
    schema_answer = await post_ok(client, OUTPUT, {**body, "format": "schema"})
    example_answer = await post_ok(client, OUTPUT, {**body, "format": "json"})
    python_answer = await post_ok(client, OUTPUT, {**body, "format": "python"})
    schema, example = schema_answer["output"], example_answer["output"]
    for answer in (schema_answer, example_answer, python_answer):
        assert answer["concept_code"] == schema_answer["concept_code"] and answer["multiplicity"] == schema_answer["multiplicity"]

    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(example, schema)

    assert python_answer["python_class"] and python_answer["output"].startswith("#")
    module = import_module_from(python_answer["output"], tmp_path)
    model = getattr(module, python_answer["python_class"])
    model.model_validate(example)

    # a real (dry) run's main result matches the schema and the classes too
    inputs = (await post_ok(client, INPUTS, {**body, "format": "json"}))["inputs_template"]
    content = main_content(await dry_run(client, bundle, inputs))
    jsonschema.validate(content, schema)
    model.model_validate(content)


async def test_the_output_schema_is_the_one_validate_reports(client):
    for bundle in (STRUCTURED_BUNDLE, BATCH_BUNDLE, FIXED_BUNDLE):
        schema_answer = await post_ok(client, OUTPUT, {"mthds_contents": [bundle], "format": "schema"})
        verdict = (await client.post("/api/v1/validate", json={"mthds_contents": [bundle]})).json()
        output = verdict["pipe_structures"][schema_answer["pipe_code"]]["output"]
        assert output["json_schema"] == schema_answer["output"]
        assert output["concept_code"] == schema_answer["concept_code"]


async def test_plural_outputs_are_wrapped_as_a_run_returns_them(client, tmp_path):
    batch = await post_ok(client, OUTPUT, {"mthds_contents": [BATCH_BUNDLE], "format": "json"})
    assert batch["multiplicity"] == "variable" and batch["item_count"] is None
    assert isinstance(batch["output"]["items"], list)
    fixed = await post_ok(client, OUTPUT, {"mthds_contents": [FIXED_BUNDLE], "format": "json"})
    assert fixed["concept_code"] == "pairs.Verdict" and fixed["multiplicity"] == "fixed" and fixed["item_count"] == 3
    assert len(fixed["output"]["items"]) == 3
    python = await post_ok(client, OUTPUT, {"mthds_contents": [FIXED_BUNDLE], "format": "python"})
    model = getattr(import_module_from(python["output"], tmp_path), python["python_class"])
    with pytest.raises(ValueError):
        model.model_validate({"items": fixed["output"]["items"][:2]})  # the count is part of the type


async def test_a_structured_output_names_its_concept_class(client, tmp_path):
    answer = await post_ok(client, OUTPUT, {"mthds_contents": [STRUCTURED_BUNDLE], "format": "python"})
    assert "class Person(BaseModel):" in answer["output"]
    module = import_module_from(answer["output"], tmp_path)
    assert getattr(module, answer["python_class"]) is module.Person
    with pytest.raises(ValueError):
        module.Person.model_validate({"name": "Ada"})  # age is required


# ---------------------------------------------------------------- runner scripts


@pytest.mark.slow
async def test_the_http_runner_calls_a_live_server_and_prints_the_answer(client, stub, tmp_path):
    answer = await post_ok(client, RUNNER, {"mthds_contents": [SEED_BUNDLE], "target": "http"})
    assert answer["pipe_code"] == "hello.summarize"
    script = tmp_path / "run_summarize.py"
    script.write_text(answer["python_code"])
    api_key = "runner-test-key"
    env = {"OPENAI_BASE_URL": stub.base_url, "AUTH_MODE": "api_key", "API_KEY": api_key}
    with ServerProcess(tmp_path / "server", env=env) as server:
        base_env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "PIPELEX_SERVER_"))}
        run = subprocess.run(
            [sys.executable, str(script)],
            env={**base_env, "PIPELEX_SERVER_URL": server.url, "PIPELEX_SERVER_TOKEN": api_key},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("STUB: "), run.stdout
        assert stub.stats()["total_calls"] >= 1

        refused = subprocess.run(
            [sys.executable, str(script)],
            env={**base_env, "PIPELEX_SERVER_URL": server.url},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert refused.returncode == 1
        assert "401 auth.missing_credential" in refused.stderr


@pytest.mark.slow
async def test_the_pipelex_runner_runs_locally_dry(client, tmp_path):
    answer = await post_ok(client, RUNNER, {"mthds_contents": [CONDITION_BUNDLE], "target": "pipelex"})
    assert answer["pipe_code"] == "parcels.route"
    code = answer["python_code"]
    assert "PipelexMTHDSProtocol" in code and "PipeRunMode.DRY" in code and "Pipelex.make(needs_inference=not args.dry_run)" in code
    script = tmp_path / "run_route.py"
    script.write_text(code)
    workdir = tmp_path / "empty"
    workdir.mkdir()
    home = tmp_path / "pipelex-home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "PIPELEX"))}
    run = subprocess.run(
        [sys.executable, str(script), "--dry-run"],
        env={**env, "DO_NOT_TRACK": "1", "PIPELEX_HOME": str(home)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "DRY RUN" in run.stdout, run.stdout[-4000:]
    assert "SMALL-BELT for address_value" in run.stdout  # the embedded template's placeholder reached the prompt


async def test_runner_scripts_embed_any_bundle_text_exactly(client, tmp_path):
    tricky = SEED_BUNDLE.replace('description = "Summarize', '# quotes \'\'\' """ and a backslash \\\\ \ndescription = "Summarize')
    for target in ("http", "pipelex"):
        answer = await post_ok(client, RUNNER, {"mthds_contents": [tricky, STRUCTURED_BUNDLE], "target": target})
        namespace: dict = {}
        source = answer["python_code"].split("\ndef print_content")[0]
        source = "\n".join(line for line in source.splitlines() if not line.startswith(("import httpx", "from pipelex", "TIMEOUT")))
        exec(compile(source, "runner", "exec"), namespace)
        assert namespace["MTHDS_CONTENTS"] == [tricky, STRUCTURED_BUNDLE]
        assert namespace["PIPE_CODE"] == "hello.summarize"
        assert namespace["INPUTS"] == {"text": "text_value"}
        compile(answer["python_code"], "runner", "exec")


# ---------------------------------------------------------------- failures, auth, leaks


@pytest.mark.parametrize("path,extra", [(INPUTS, {"format": "json"}), (OUTPUT, {"format": "schema"}), (RUNNER, {"target": "http"})])
async def test_bad_bundles_and_pipes_are_422_problems(client, path, extra):
    bad_toml = await client.post(path, json={"mthds_contents": ['domain = "x"\n[pipe.a\n'], **extra})
    assert bad_toml.status_code == 422 and bad_toml.headers["content-type"].startswith("application/problem+json")
    assert bad_toml.json()["code"] == "method.invalid"

    unknown = await client.post(path, json={"mthds_contents": [SEED_BUNDLE], "pipe_code": "nowhere", **extra})
    assert unknown.status_code == 422 and unknown.json()["code"] == "request.pipe_not_found"

    no_main = SEED_BUNDLE.replace('main_pipe = "summarize"\n', "")
    unspecified = await client.post(path, json={"mthds_contents": [no_main], **extra})
    assert unspecified.status_code == 422 and unspecified.json()["code"] == "request.pipe_unspecified"
    assert unspecified.json()["params"]["candidates"] == ["hello.summarize"]


@pytest.mark.parametrize(
    "path,body",
    [
        (INPUTS, {"format": "yaml"}),
        (INPUTS, {}),
        (OUTPUT, {"format": "typescript"}),
        (RUNNER, {"target": "curl"}),
        (RUNNER, {"target": "http", "extra": 1}),
    ],
)
async def test_bad_requests_are_422(client, path, body):
    response = await client.post(path, json={"mthds_contents": [SEED_BUNDLE], **body})
    assert response.status_code == 422 and response.json()["code"] == "request.invalid"
    empty = await client.post(path, json={"mthds_contents": [], "format": "json", "target": "http"})
    assert empty.status_code == 422


async def test_build_routes_need_credentials_like_the_others(make_app):
    app = await make_app(auth_mode="api_key", api_key="build-key")
    body = {"mthds_contents": [SEED_BUNDLE], "format": "json"}
    refused = await app.client.post(INPUTS, json=body)
    assert refused.status_code == 401 and refused.json()["code"] == "auth.missing_credential"
    accepted = await app.client.post(INPUTS, json=body, headers={"Authorization": "Bearer build-key"})
    assert accepted.status_code == 200


async def test_no_library_is_left_open(client):
    before = library_count()
    for bundle in (SEED_BUNDLE, CONDITION_BUNDLE, FIXED_BUNDLE, 'domain = "x"\n[pipe.a\n'):
        for path, extra in ((INPUTS, {"format": "toml"}), (OUTPUT, {"format": "python"}), (RUNNER, {"target": "pipelex"})):
            await client.post(path, json={"mthds_contents": [bundle], **extra})
            await client.post(path, json={"mthds_contents": [bundle], "pipe_code": "nowhere", **extra})
    assert library_count() == before


async def test_concurrent_builds_see_only_their_own_bundle(client):
    import asyncio

    def bundle(index: int) -> str:  # every bundle redefines iso.Result with a field of its own
        return (
            f'domain = "iso"\nmain_pipe = "answer"\n\n[concept.Result]\ndescription = "Result"\n\n'
            f'[concept.Result.structure]\nfield_{index} = {{ type = "text", description = "f", required = true }}\n\n'
            f'[pipe.answer]\ntype = "PipeLLM"\ndescription = "a"\ninputs = {{ text = "Text" }}\noutput = "Result"\n'
            f'prompt = "Answer about $text"\n'
        )

    before = library_count()
    answers = await asyncio.gather(
        *(client.post(OUTPUT, json={"mthds_contents": [bundle(index)], "format": "schema"}) for index in range(16))
    )
    for index, answer in enumerate(answers):
        assert list(answer.json()["output"]["properties"]) == [f"field_{index}"]
    assert library_count() == before


async def test_openapi_documents_the_build_routes(client):
    spec = (await client.get("/openapi.json")).json()
    for path, model in ((INPUTS, "BuildInputsResponse"), (OUTPUT, "BuildOutputResponse"), (RUNNER, "BuildRunnerResponse")):
        operation = spec["paths"][path]["post"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(model)
        assert "422" in operation["responses"]
    fields = spec["components"]["schemas"]["BuildInputsResponse"]["properties"]
    assert set(fields) == {"pipe_code", "format", "inputs_template", "success", "message"}
    assert set(spec["components"]["schemas"]["BuildRunnerResponse"]["properties"]) == {"python_code", "pipe_code", "success", "message"}
