"""The /v1 answers the official clients read: `state` on runs and callbacks, the official routing problems for a
path or method no route serves, and /v1/validate's views, contracts, default pipe and Markdown. Each answer is also
read with the SDK's own models and answer reader, as a client would read it."""

from __future__ import annotations

import asyncio
import uuid

from mthds.protocol.input_form import PipeInputFormDescriptor
from mthds.protocol.output_form import PipeOutputFormDescriptor
from mthds.protocol.problem.models import Problem, ProblemItem
from pipelex_sdk.answer_reading import read_hosted_answer
from pipelex_sdk.execute_result import PipelexExecuteResult
from pipelex_sdk.runs import PipelexRunResultStart
from pipelex_sdk.validation_models import PipelexInvalidReport, PipelexValidationReport, PipelexValidationResultAdapter

from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, STRUCTURED_BUNDLE
from tests.support.receiver import Receiver
from tests.support.runs import wait_for_end

EXECUTE, START, VALIDATE = "/v1/execute", "/v1/start", "/v1/validate"
SEED_FILES = {"hello.mthds": SEED_BUNDLE}
CONTACTS_FILES = {"contacts.mthds": STRUCTURED_BUNDLE}
SECRET = "protocol-answers-callback-secret"


def run_body(**extra: object) -> dict[str, object]:
    return {"files": SEED_FILES, "inputs": {"text": SEED_TEXT}, **extra}


# ---------------------------------------------------------------- state


async def test_execute_answers_state_as_the_official_server_does(client):
    response = await client.post(EXECUTE, json=run_body())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["state"] == "COMPLETED"
    assert answer["pipeline_state"] == "COMPLETED" and answer["status"] == "COMPLETED"  # our fields are kept
    result = PipelexExecuteResult.model_validate(answer)  # what PipelexAPIClient.execute returns
    assert result.model_extra is not None and result.model_extra["state"] == "COMPLETED"
    assert result.main_stuff["text"].startswith("STUB:")


async def test_start_answers_the_runs_state_then_a_replay_its_later_state(client):
    key = f"state-{uuid.uuid4().hex}"
    response = await client.post(START, json=run_body(dry_run=True), headers={"Idempotency-Key": key})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["state"] == answer["pipeline_state"]
    assert answer["state"] in ("STARTED", "RUNNING", "COMPLETED")
    started = PipelexRunResultStart.model_validate(answer)  # what PipelexAPIClient.start returns
    assert started.model_extra is not None and started.model_extra["state"] == answer["state"]

    await wait_for_end(client, answer["pipeline_run_id"])
    replay = await client.post(START, json=run_body(dry_run=True), headers={"Idempotency-Key": key})
    assert replay.status_code == 202
    assert replay.json()["pipeline_run_id"] == answer["pipeline_run_id"]
    assert replay.json()["state"] == "COMPLETED"  # the run's state now, not a constant


async def test_callback_bodies_carry_state_completed_or_failed(make_app, stub):
    app = await make_app(completion_callback_secret=SECRET, callback_allow_private_hosts=True)
    marker = f"refuse-me-{uuid.uuid4().hex}"
    stub.configure(fail={"status": 400, "match": marker, "count": None})
    with Receiver() as receiver:
        ok = await app.client.post(START, json=run_body(dry_run=True, callback_urls=[receiver.url]))
        failed = await app.client.post(START, json={**run_body(callback_urls=[receiver.url]), "inputs": {"text": marker}})
        assert ok.status_code == 202 and failed.status_code == 202, (ok.text, failed.text)
        deliveries = await asyncio.to_thread(receiver.wait_for, 2)
    by_run = {delivery.json["pipeline_run_id"]: delivery for delivery in deliveries}
    completed = by_run[ok.json()["pipeline_run_id"]]
    assert completed.verify(SECRET)  # the body is signed with `state` in it
    assert completed.json["state"] == "COMPLETED" and completed.json["pipeline_state"] == "COMPLETED"
    refused = by_run[failed.json()["pipeline_run_id"]].json
    assert refused["state"] == "FAILED" and refused["pipeline_state"] == "FAILED"
    assert refused["error"]["code"] == "provider.failed"
    # the run document itself is unchanged: `state` is the callback's
    assert "state" not in (await app.client.get(f"/api/v1/runs/{refused['pipeline_run_id']}")).json()


# ---------------------------------------------------------------- routing problems


def assert_protocol_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    assert body["type"] == f"https://mthds.ai/errors/{code}"
    assert body["title"] and body["detail"] and body["status"] == status
    assert body["domain"] == "input" and body["retry"] == "no" and body["next_step"]["kind"] == "upgrade"
    Problem.model_validate(body)  # a complete protocol problem document
    reading = read_hosted_answer(status=status, headers=dict(response.headers), body=response.text)
    assert reading.from_body and reading.problem.code == code  # the SDK reads our document, not its own guess
    return body


async def test_an_unknown_v1_path_is_request_not_found(client):
    for path in ("/v1/nowhere", "/v1/hosted-only/subscription", "/v1", "/v1/runs/abc/nothing"):
        body = assert_protocol_problem(await client.get(path), 404, "request.not_found")
        assert path in body["detail"]
    assert_protocol_problem(await client.post("/v1/resolve-nothing", json={}), 404, "request.not_found")


async def test_a_method_a_v1_route_does_not_accept_is_request_method_not_allowed_with_allow(client):
    response = await client.get(EXECUTE)
    body = assert_protocol_problem(response, 405, "request.method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert "GET" in body["detail"] and "POST" in body["detail"]
    status = await client.delete("/v1/runs/some-run/status")
    assert_protocol_problem(status, 405, "request.method_not_allowed")
    assert "GET" in status.headers["allow"]


async def test_a_routes_own_404_and_other_prefixes_keep_their_codes(client):
    run = await client.get("/v1/runs/no-such-run/status")  # the route answered: a run it does not have
    assert run.status_code == 404 and run.json()["code"] == "run.not_found"
    assert read_hosted_answer(status=404, headers=dict(run.headers), body=run.text).problem.code == "run.not_found"
    assert (await client.get("/api/v1/nowhere")).json()["code"] == "route.not_found"
    wrong_method = await client.get("/api/v1/pipeline/execute")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "route.method_not_allowed"
    assert wrong_method.headers["allow"] == "POST"  # RFC 9110: a 405 names the methods the route accepts


# ---------------------------------------------------------------- validate


async def test_validate_answers_the_reports_artifacts_and_no_null_member(client):
    response = await client.post(VALIDATE, json={"files": CONTACTS_FILES})
    assert response.status_code == 200, response.text
    verdict = response.json()
    assert verdict["is_valid"] is True
    assert verdict["default_pipe_ref"] == "contacts.extract_person"
    assert verdict["mthds_contents"] == [STRUCTURED_BUNDLE]
    contract = verdict["pipe_io_contracts"]["contacts.extract_person"]
    assert contract["output"]["concept_ref"] == "contacts.Person"
    assert set(contract["output"]["json_schema"]["required"]) >= {"name", "age"}
    assert isinstance(verdict["liftable_pipes"], list)
    assert verdict["tree_files_read"] == {"contacts.extract_person": []}  # an LLM step reads no file of the tree
    assert verdict["pipe_structures"]["contacts.extract_person"]  # our own extension is kept
    for absent in ("input_form", "output_form", "rendered_markdown"):  # opt-in only
        assert absent not in verdict
    assert all(value is not None for value in verdict.values())
    report = PipelexValidationResultAdapter.validate_python(verdict)
    assert isinstance(report, PipelexValidationReport) and report.default_pipe_ref == "contacts.extract_person"
    assert report.pipe_io_contracts["contacts.extract_person"].output.concept_ref == "contacts.Person"


async def test_views_and_markdown_are_added_on_request_and_the_cache_still_serves(client):
    engine = client._transport.app.state.services.engine
    files = {"contacts.mthds": STRUCTURED_BUNDLE + f"\n# views probe {uuid.uuid4().hex}\n"}
    plain = (await client.post(VALIDATE, json={"files": files})).json()
    cached = len(engine.validator.verdicts)
    asked = (
        await client.post(VALIDATE, json={"files": files, "views": ["output_form", "input_form", "no_such_view"], "render": ["markdown"]})
    ).json()
    assert len(engine.validator.verdicts) == cached  # the same verdict: views are shaped outside the cache
    assert set(asked) - set(plain) == {"input_form", "output_form", "rendered_markdown"}
    assert {key: value for key, value in asked.items() if key in plain} == plain
    form = asked["input_form"]["contacts.extract_person"]
    assert [field["name"] for field in form["fields"]] == ["text"]
    assert asked["output_form"]["contacts.extract_person"]
    assert asked["rendered_markdown"].startswith("# Validation passed")
    assert "`contacts.extract_person`" in asked["rendered_markdown"]
    report = PipelexValidationResultAdapter.validate_python(asked)  # the SDK's typed forms read them
    assert isinstance(report, PipelexValidationReport)
    assert report.input_form is not None and report.output_form is not None
    assert isinstance(report.input_form["contacts.extract_person"], PipeInputFormDescriptor)
    assert isinstance(report.output_form["contacts.extract_person"], PipeOutputFormDescriptor)
    only_output = (await client.post(VALIDATE, json={"files": files, "views": ["output_form"]})).json()
    assert "output_form" in only_output and "input_form" not in only_output


async def test_a_method_without_main_pipe_has_no_default_pipe_ref(client):
    bundle = SEED_BUNDLE.replace('main_pipe = "summarize"\n', "")
    verdict = (await client.post(VALIDATE, json={"files": {"hello.mthds": bundle}})).json()
    assert verdict["is_valid"] is True
    assert "default_pipe_ref" not in verdict and "graph_spec" not in verdict
    assert "hello.summarize" in verdict["pipe_io_contracts"]


async def test_an_invalid_verdict_gets_whole_items_and_the_runtimes_markdown_but_no_views(client):
    bundle = SEED_BUNDLE.replace('output = "Text"', 'output = "Nowhere"')
    body = {"files": {"hello.mthds": bundle}, "render": ["markdown"], "views": ["input_form", "output_form"]}
    verdict = (await client.post(VALIDATE, json=body)).json()
    assert verdict["is_valid"] is False
    assert [item["code"] for item in verdict["errors"]] == ["method.concept_unresolved"]
    assert all(ProblemItem.model_validate(item) for item in verdict["errors"])
    assert verdict["rendered_markdown"].startswith("# Validation failed")
    assert "method.concept_unresolved" in verdict["rendered_markdown"]
    assert "input_form" not in verdict and "output_form" not in verdict and "mthds_contents" not in verdict
    assert isinstance(PipelexValidationResultAdapter.validate_python(verdict), PipelexInvalidReport)

    syntax = (await client.post(VALIDATE, json={"files": {"broken.mthds": "domain = [\n"}, "render": ["markdown"]})).json()
    assert syntax["errors"][0]["code"] == "method.syntax" and syntax["errors"][0]["location"]["line"] == 2
    assert syntax["rendered_markdown"].startswith("# Validation failed")


async def test_api_v1_validate_keeps_its_shape(client):
    verdict = (await client.post("/api/v1/validate", json={"mthds_contents": [STRUCTURED_BUNDLE]})).json()
    assert verdict["success"] is True
    assert "protocol_report" not in verdict and "pipe_io_contracts" not in verdict and "is_valid" not in verdict


NOTE_BUNDLE = """domain = "notes"
main_pipe = "summarize_note"

[concept.Note]
description = "A note"

[concept.Note.structure]
title = { type = "text", description = "Title", required = false }

[pipe.summarize_note]
type = "PipeLLM"
description = "Summarize a note"
inputs = { note = "Note" }
output = "Text"
prompt = "Summarize:\\n@note"
"""


async def test_a_valid_methods_warnings_are_problem_items_and_in_the_markdown(client):
    body = {"files": {"notes.mthds": NOTE_BUNDLE}, "render": ["markdown"]}
    verdict = (await client.post(VALIDATE, json=body)).json()
    assert verdict["is_valid"] is True  # a warning never flips the verdict
    (warning,) = verdict["warnings"]  # the input's concept requires nothing: the runtime's vacuous-presence lint
    assert warning["code"] == "method.input_presence_vacuous"
    assert warning["params"] == {"pipe": "summarize_note", "input": "note"}
    ProblemItem.model_validate(warning)
    assert "## Warnings (1)" in verdict["rendered_markdown"] and "input_presence_vacuous" in verdict["rendered_markdown"]
    report = PipelexValidationResultAdapter.validate_python(verdict)
    assert isinstance(report, PipelexValidationReport) and report.warnings[0].code == "method.input_presence_vacuous"
