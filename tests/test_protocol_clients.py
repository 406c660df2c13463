"""The official MTHDS clients (`pipelex-sdk`'s PipelexAPIClient, `mthds`'s MthdsAPIClient), unchanged, against a live
server in each auth mode: one server per mode, many client calls each. Plus the pure mapping helpers."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from mthds.method_tree.file_entry import HashFileEntry
from mthds.protocol.models import InvalidValidationReport, ModelCategory, ValidationReport
from mthds.protocol.protocol import PROTOCOL_VERSION
from mthds.runners.api.client import MthdsAPIClient
from mthds.runners.api.exceptions import ApiResponseError as MthdsApiResponseError
from pipelex_sdk.client import PipelexAPIClient
from pipelex_sdk.errors import ApiResponseError, RunFailedError
from pipelex_sdk.runs import RunArtifact, RunResultCompleted, RunResultFailed, RunStatus, WaitForResultOptions
from pipelex_sdk.validation_models import PipelexInvalidReport, PipelexValidationReport

from pipelex_server.api.protocol.answers import progress_answer
from pipelex_server.api.protocol.problems import complete_problem
from pipelex_server.errors import ApiProblem
from pipelex_server.runs.progress import protocol_status
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, SEQUENCE_BUNDLE
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

API_KEY = "protocol-test-key"
JWT_SECRET = "protocol-test-secret-that-is-long-enough-for-hs256"
RUN_TIMEOUT_SECONDS = 6  # the none-mode server's limit, for the TIMED_OUT test
SEED_FILES = {"hello.mthds": SEED_BUNDLE}
MENU_FILES = {"menus/card.mthds": SEQUENCE_BUNDLE}
MENU_INPUTS = {"note": {"concept": "menus.KitchenNote", "content": "grilled fish, lemon tart"}}


def token(user_id: str, secret: str = JWT_SECRET) -> str:
    return jwt.encode({"user_id": user_id, "exp": int(time.time()) + 3600}, secret, algorithm="HS256")


@dataclass
class Deployment:
    mode: str
    server: ServerProcess
    key: str  # what a client sends as its API key ("" = none)

    def pipelex(self, key: str | None = None) -> PipelexAPIClient:
        return PipelexAPIClient(api_key=self.key if key is None else key, base_url=self.server.url, request_timeout_seconds=60)

    def mthds(self, key: str | None = None) -> MthdsAPIClient:
        # MthdsAPIClient refuses an empty key even where the server needs none: any placeholder does then.
        return MthdsAPIClient(api_key=(self.key if key is None else key) or "unused", base_url=self.server.url, request_timeout_seconds=60)

    def http(self) -> httpx.Client:
        return self.server.client(headers={"Authorization": f"Bearer {self.key}"} if self.key else {})


@pytest.fixture(scope="module", params=["none", "api_key", "jwt"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Any:
    mode = request.param
    env = {"OPENAI_BASE_URL": stub.base_url, "AUTH_MODE": mode}
    key = ""
    if mode == "none":
        env["RUN_TIMEOUT_SECONDS"] = str(RUN_TIMEOUT_SECONDS)
    elif mode == "api_key":
        env["API_KEY"] = key = API_KEY
    else:
        env["JWT_SECRET_KEY"] = JWT_SECRET
        key = token("alice")
    server = ServerProcess(tmp_path_factory.mktemp(f"protocol-{mode}"), env=env).start()
    yield Deployment(mode=mode, server=server, key=key)
    server.stop()


async def wait_terminal(client: PipelexAPIClient, run_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = await client.get_run_status(run_id)
        if run.status.is_terminal:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run.status}"
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- both clients, every auth mode


async def test_execute_returns_the_stub_answer_and_records_the_run(deployment: Deployment) -> None:
    async with deployment.pipelex() as client:
        result = await client.execute(files=SEED_FILES, inputs={"text": SEED_TEXT})
    assert result.main_stuff["text"].startswith("STUB: Summarize in one sentence")

    async with deployment.mthds() as client:
        plain = await client.execute(pipe_code="summarize", files=SEED_FILES, inputs={"text": SEED_TEXT})
    main = plain.pipe_output.working_memory.root[plain.model_extra["main_stuff_name"]]
    assert main.concept == "native.Text"
    assert main.content["text"].startswith("STUB: Summarize")

    with deployment.http() as http:  # the same run store as /api/v1
        for run_id in (result.pipeline_run_id, plain.pipeline_run_id):
            assert http.get(f"/api/v1/runs/{run_id}").json()["pipeline_state"] == "COMPLETED"


async def test_validate_gives_a_verdict_for_valid_and_invalid_methods(deployment: Deployment) -> None:
    async with deployment.pipelex() as client:
        valid = await client.validate(files=SEED_FILES)
        invalid = await client.validate(files={"broken.mthds": "domain = [\n"})
    assert isinstance(valid, PipelexValidationReport) and valid.is_runnable
    assert valid.bundle_blueprint["domain"] == "hello"
    assert valid.rendered_markdown
    assert isinstance(invalid, PipelexInvalidReport)
    assert invalid.errors[0].code == "method.syntax", invalid

    async with deployment.mthds() as client:
        assert isinstance(await client.validate(files=MENU_FILES), ValidationReport)
        verdict = await client.validate(files={"broken.mthds": "domain = [\n"})
    assert isinstance(verdict, InvalidValidationReport)
    assert verdict.errors[0].code == "method.syntax"
    assert verdict.errors[0].location is not None and verdict.errors[0].location.line == 2


async def test_models_and_version(deployment: Deployment) -> None:
    async with deployment.pipelex() as client:
        deck = await client.models()
        llms = await client.models(ModelCategory.LLM)
        info = await client.version()
    assert len(llms.models) < len(deck.models)
    assert llms.models and all(model.type == ModelCategory.LLM for model in llms.models)
    assert info.protocol_version == str(PROTOCOL_VERSION)
    assert info.model_extra["implementation"] == "pipelex-server"
    assert info.blob_store is True  # the blob routes (tests/api/test_blob_routes.py)

    async with deployment.mthds() as client:
        assert (await client.version()).protocol_version == str(PROTOCOL_VERSION)
        assert {model.name for model in (await client.models()).models} == {model.name for model in deck.models}


async def test_start_then_status_progress_and_results(deployment: Deployment) -> None:
    key = str(uuid.uuid4())
    async with deployment.pipelex() as client:
        started = await client.start(files=MENU_FILES, inputs=MENU_INPUTS, idempotency_key=key)
        again = await client.start(files=MENU_FILES, inputs=MENU_INPUTS, idempotency_key=key)
        assert again.pipeline_run_id == started.pipeline_run_id == key  # the key names the run: it never runs twice
        run_id = started.pipeline_run_id

        run = await wait_terminal(client, run_id)
        assert run.status is RunStatus.COMPLETED and run.error is None
        assert run.model_extra["pipeline_state"] == "COMPLETED"

        progress = await client.get_run_progress(run_id)
        assert progress.status == "succeeded" and progress.mode == "live" and progress.version > 0
        paths = {invocation.path: invocation for invocation in progress.invocations}
        assert list(paths) == ["write_card", "write_card/step_1", "write_card/step_2", "write_card/step_3"], list(paths)
        assert [paths[path].pipe_code for path in list(paths)[1:]] == ["list_dishes", "draft_card", "polish_card"]
        assert all(invocation.status == "succeeded" and invocation.ended_at for invocation in progress.invocations)

        results = await client.get_run_result(run_id)
        assert isinstance(results, RunResultCompleted)
        assert results.result.main_stuff["text"].startswith("STUB: STEP3 polish")
        assert results.result.working_memory is not None and "dishes" in results.result.working_memory.root
        assert results.result.tokens_usages and results.result.tokens_usages[0].pipe_code == "list_dishes"
        narrowed = await client.get_run_result(run_id, artifacts=[RunArtifact.MAIN_STUFF])
        assert isinstance(narrowed, RunResultCompleted) and not narrowed.result.carries(RunArtifact.WORKING_MEMORY)

        snapshots: list[Any] = []
        waited = await client.start_and_wait(
            files=SEED_FILES,
            inputs={"text": SEED_TEXT},
            wait_options=WaitForResultOptions(interval_seconds=0.1, on_progress=snapshots.append),
        )
        assert waited.main_stuff["text"].startswith("STUB: Summarize")

    # a run started by the protocol-only client, or under /api/v1, is read through /v1/runs, and the other way round
    async with deployment.mthds() as plain:
        bare = await plain.start(files=SEED_FILES, inputs={"text": SEED_TEXT})
    with deployment.http() as http:
        native = http.post("/api/v1/pipeline/start", json={"mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}})
        assert native.status_code == 202, native.text
    async with deployment.pipelex() as client:
        for other in (bare.pipeline_run_id, native.json()["pipeline_run_id"]):
            assert (await wait_terminal(client, other)).status is RunStatus.COMPLETED
            assert isinstance(await client.get_run_result(other), RunResultCompleted)
    with deployment.http() as http:
        assert http.get(f"/api/v1/runs/{bare.pipeline_run_id}").json()["pipeline_state"] == "COMPLETED"


@pytest.mark.parametrize("deployment", ["api_key", "jwt"], indirect=True)
async def test_wrong_or_missing_credentials_raise_auth_errors(deployment: Deployment) -> None:
    wrong = "not-the-key" if deployment.mode == "api_key" else token("alice", secret="another-secret-that-is-long-enough-for-hs256")
    async with deployment.pipelex(key=wrong) as client:
        with pytest.raises(ApiResponseError) as refused:
            await client.execute(files=SEED_FILES, inputs={"text": SEED_TEXT})
    assert refused.value.status == 401
    assert refused.value.problem.code == "auth.invalid_credential"
    assert refused.value.problem.next_step.kind == "check_credentials"
    assert "refused" in str(refused.value)

    async with deployment.mthds(key=wrong) as client:
        with pytest.raises(MthdsApiResponseError) as plain_refused:
            await client.models()
    assert plain_refused.value.problem.code == "auth.invalid_credential"

    async with deployment.pipelex(key="") as client:  # PipelexAPIClient sends no Authorization header at all
        with pytest.raises(ApiResponseError) as missing:
            await client.get_run_status("some-run")
    assert missing.value.problem.code == "auth.missing_credential"

    async with deployment.pipelex(key=wrong) as client:  # the version handshake is public
        assert (await client.version()).protocol_version == str(PROTOCOL_VERSION)


@pytest.mark.parametrize("deployment", ["jwt"], indirect=True)
async def test_a_caller_sees_only_its_own_runs(deployment: Deployment) -> None:
    async with deployment.pipelex() as alice:
        run_id = (await alice.start(files=SEED_FILES, inputs={"text": SEED_TEXT})).pipeline_run_id
        await wait_terminal(alice, run_id)
    async with deployment.pipelex(key=token("bob")) as bob:
        with pytest.raises(ApiResponseError) as hidden:
            await bob.get_run_status(run_id)
    assert (hidden.value.status, hidden.value.problem.code) == (404, "run.not_found")


# ---------------------------------------------------------------- failures and states (AUTH_MODE=none server)


@pytest.mark.parametrize("deployment", ["none"], indirect=True)
async def test_failed_timed_out_and_cancelled_runs_map_onto_the_sdk_states(deployment: Deployment, stub: Any) -> None:
    stub.configure(
        fail={"status": 401, "count": None, "match": "FAIL-ME"},
        timeout=[{"seconds": 30, "count": None, "match": "SLOW-ME"}, {"seconds": 30, "count": None, "match": "CANCEL-ME"}],
    )
    async with deployment.pipelex() as client:
        with pytest.raises(ApiResponseError) as failed_execute:
            await client.execute(files=SEED_FILES, inputs={"text": "FAIL-ME now"})
        problem = failed_execute.value.problem
        assert problem.code.startswith("provider.") and problem.pipeline_run_id, problem

        failing = (await client.start(files=SEED_FILES, inputs={"text": "FAIL-ME later"})).pipeline_run_id
        slow = (await client.start(files=SEED_FILES, inputs={"text": "SLOW-ME please"})).pipeline_run_id
        cancelled = (await client.start(files=SEED_FILES, inputs={"text": "CANCEL-ME please"})).pipeline_run_id

        assert stub.wait_in_flight(2, timeout=30)
        with deployment.http() as http:
            assert http.post(f"/api/v1/runs/{cancelled}/cancel").status_code == 202

        expected = {failing: RunStatus.FAILED, slow: RunStatus.TIMED_OUT, cancelled: RunStatus.CANCELLED}
        for run_id, status in expected.items():
            run = await wait_terminal(client, run_id, timeout=RUN_TIMEOUT_SECONDS + 30)
            assert run.status is status, (run_id, run.status)
            assert run.error is not None
            outcome = await client.get_run_result(run_id)
            assert isinstance(outcome, RunResultFailed) and outcome.status is status
            assert outcome.problem.code == "run.failed" and outcome.error is not None and outcome.error.code == run.error.code
        assert (await client.get_run_status(slow)).error.code == "run.timed_out"

        with pytest.raises(RunFailedError) as waited:
            await client.wait_for_result(failing, WaitForResultOptions(interval_seconds=0.1, timeout_seconds=10))
        assert waited.value.status is RunStatus.FAILED

        progress = await client.get_run_progress(failing)
        assert progress.status == "failed"
        assert progress.invocations[-1].status == "failed" and progress.invocations[-1].last_failure is not None


@pytest.mark.parametrize("deployment", ["none"], indirect=True)
async def test_files_are_checked_before_anything_runs(deployment: Deployment) -> None:
    refusals = {  # a method tree's own rules (more in tests/api/test_method_trees.py)
        "../evil.mthds": ("security.input_path_refused", "rule", "parent_segment"),
        "a\\b.mthds": ("method.package_invalid", "reason", "invalid_tree_path"),
        "tools/helper.py": ("pipelex.deployment.custom_code_requires_sandbox", "path", "tools/helper.py"),
    }
    async with deployment.mthds() as client:
        for name, (code, param, value) in refusals.items():
            with pytest.raises(MthdsApiResponseError) as refused:
                await client.start(files={name: SEED_BUNDLE}, inputs={"text": SEED_TEXT})
            assert refused.value.status == 422
            assert (refused.value.problem.code, refused.value.problem.params.model_extra[param]) == (code, value)
        # bytes no earlier run kept: a tree that runs is kept as the caller's blobs (tests/api/test_method_trees.py)
        by_hash = HashFileEntry.make_from_bytes(f"{SEED_BUNDLE}# {uuid.uuid4()}\n".encode())
        with pytest.raises(MthdsApiResponseError) as missing:
            await client.execute(files={"hello.mthds": by_hash}, inputs={"text": SEED_TEXT})
        assert missing.value.problem.code == "request.blobs_missing"
        assert missing.value.problem.params.missing_blobs == [by_hash.sha256]
        with pytest.raises(MthdsApiResponseError) as unknown:
            await client.execute(files=SEED_FILES, inputs={"text": SEED_TEXT}, extra={"not_a_field": "hosted-only"})
        assert unknown.value.problem.code == "request.unsupported"
        with pytest.raises(MthdsApiResponseError) as not_a_selector:  # method_id names a catalog method (docs/platform.md)
            await client.execute(files=SEED_FILES, inputs={"text": SEED_TEXT}, extra={"method_id": "hosted-only"})
        assert (not_a_selector.value.problem.code, not_a_selector.value.status) == ("request.invalid", 422)
        # a bundle the runtime refuses is a 422 at start, with the runtime's own code
        with pytest.raises(MthdsApiResponseError) as invalid:
            await client.start(files={"broken.mthds": "domain = [\n"}, inputs={})
        assert invalid.value.status == 422 and invalid.value.problem.code.startswith("method.")
        # a body refused by schema validation is a readable problem too (not "response unreadable")
        with pytest.raises(MthdsApiResponseError) as reserved:
            await client.execute(files=SEED_FILES, inputs={"text": {"__class__": "os.system"}})
        # under the official server's code (the runtime registry's), as it answers on /v1 (/api/v1 keeps input.reserved_key)
        assert reserved.value.status == 422 and reserved.value.problem.code == "pipelex.security.reserved_key"


# ---------------------------------------------------------------- pure mapping


@pytest.mark.parametrize(
    ("state", "error_code", "status"),
    [
        ("STARTED", None, "PENDING"),
        ("RUNNING", None, "RUNNING"),
        ("COMPLETED", None, "COMPLETED"),
        ("FAILED", "provider.failed", "FAILED"),
        ("FAILED", "run.timed_out", "TIMED_OUT"),
        ("CANCELLED", "run.cancelled", "CANCELLED"),
        ("ERROR", "run.lost", "TERMINATED"),
    ],
)
def test_state_mapping(state: str, error_code: str | None, status: str) -> None:
    assert protocol_status(state, {"code": error_code} if error_code else None) == status
    assert status in RunStatus.__members__


def _event(seq: int, event: str, pipe_code: str, pipe_type: str = "PipeLLM") -> dict[str, Any]:
    return {"seq": seq, "event": event, "data": {"pipe_code": pipe_code, "pipe_type": pipe_type, "at": f"2026-01-01T00:00:0{seq}Z"}}


def test_progress_nests_children_and_closes_what_a_stopped_run_left_open() -> None:
    document = {"pipeline_run_id": "r", "pipeline_state": "CANCELLED", "error": {"code": "run.cancelled"}, "dry_run": False}
    events = [
        _event(1, "pipe_started", "root", "PipeSequence"),
        _event(2, "pipe_started", "fan", "PipeParallel"),
        _event(3, "pipe_started", "a"),
        _event(4, "pipe_started", "b"),
        _event(5, "pipe_finished", "a"),
    ]
    progress = progress_answer(document, events)
    assert [(inv["path"], inv["status"]) for inv in progress["invocations"]] == [
        ("root", "canceled"),
        ("root/step_1", "canceled"),
        ("root/step_1/branch_1", "succeeded"),
        ("root/step_1/branch_2", "canceled"),
    ]
    assert (progress["status"], progress["version"]) == ("canceled", 5)


def test_problems_get_the_members_protocol_readers_require() -> None:
    ours = ApiProblem(status=503, code="inference.not_configured", detail="No backend.")
    complete_problem(ours)
    registry = ApiProblem(status=404, code="run.not_found", detail="No run 'x'.", params={"pipeline_run_id": "x"})
    complete_problem(registry)
    assert ours.members["next_step"]["kind"] == "fix_configuration"
    assert registry.members["next_step"]["kind"] == "change_input" and registry.members["domain"] == "input"
    from mthds.protocol.problem.models import Problem

    for problem in (ours, registry):
        Problem.model_validate(problem.to_document(request_id="rid"))


# ---------------------------------------------------------------- answers the clients read (issue 12, item 4)


@pytest.mark.parametrize("deployment", ["none"], indirect=True)
async def test_clients_read_state_views_and_the_default_pipe(deployment: Deployment) -> None:
    async with deployment.pipelex() as client:
        result = await client.execute(files=SEED_FILES, inputs={"text": SEED_TEXT})
        started = await client.start(files=SEED_FILES, inputs={"text": SEED_TEXT})
        report = await client.validate(files=SEED_FILES, views=["input_form", "output_form"])
        plain = await client.validate(files=SEED_FILES)
        assert (await wait_terminal(client, started.pipeline_run_id)).status is RunStatus.COMPLETED
    assert result.model_extra["state"] == "COMPLETED"
    assert started.model_extra["state"] in ("STARTED", "RUNNING", "COMPLETED")
    assert isinstance(report, PipelexValidationReport)
    assert report.default_pipe_ref == "hello.summarize"
    assert report.mthds_contents == [SEED_BUNDLE]
    assert report.pipe_io_contracts["hello.summarize"].output.concept_ref == "native.Text"
    assert report.input_form is not None and [field.name for field in report.input_form["hello.summarize"].fields] == ["text"]
    assert report.output_form is not None and "hello.summarize" in report.output_form
    assert report.rendered_markdown and report.rendered_markdown.startswith("# Validation passed")
    assert isinstance(plain, PipelexValidationReport) and plain.input_form is None and plain.output_form is None

    async with deployment.mthds() as bare:
        executed = await bare.execute(pipe_code="summarize", files=SEED_FILES, inputs={"text": SEED_TEXT})
    assert executed.model_extra["state"] == "COMPLETED"


@pytest.mark.parametrize("deployment", ["none"], indirect=True)
async def test_an_unknown_route_reads_as_absent_a_hosted_only_one_as_final_and_a_missing_run_as_missing(deployment: Deployment) -> None:
    from pipelex_sdk.errors import RunLifecycleUnavailableError

    async with deployment.pipelex() as client:
        with pytest.raises(ApiResponseError) as hosted_only:
            await client.get_subscription()  # a hosted-platform feature: a final 501, not "route absent"
        with pytest.raises(ApiResponseError) as missing:
            await client.get_run_status("no-such-run")
    assert hosted_only.value.status == 501
    assert hosted_only.value.problem.code == "runtime.unsupported" and "billing" in hosted_only.value.problem.detail
    assert not isinstance(missing.value, RunLifecycleUnavailableError)
    assert missing.value.problem.code == "run.not_found"
    with deployment.http() as http:
        absent = http.get("/v1/hosted-nothing/at-all")
        wrong = http.get("/v1/start")
    assert absent.status_code == 404 and absent.json()["code"] == "request.not_found" and absent.json()["domain"] == "input"
    assert "/v1/hosted-nothing/at-all" in absent.json()["detail"]
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["code"] == "request.method_not_allowed" and wrong.json()["next_step"]["kind"] == "upgrade"


# ---------------------------------------------------------------- method trees as a run source (issue 12, item 1)
# The official client, unchanged, sends a package directory (`tree=Path(...)`): its METHODS.toml, two domains (one
# calling the other's exported pipe) and a file no step reads. Its bad-input cases are in tests/api/test_method_trees.py.

MENU_PACKAGE = Path(__file__).resolve().parent / "support" / "methods" / "menu_package"
TREE_NOTE = "grilled fish, lemon tart TOKEN-TREE"


def assert_tree_menu(text: str) -> None:
    assert text.startswith("STUB: KITCHEN write a menu card for: STUB: DRAFTING"), text
    assert text.endswith("[TOKEN-TREE]"), text


async def test_the_sdk_runs_validates_and_starts_a_package_directory(deployment: Deployment) -> None:
    async with deployment.pipelex() as client:
        executed = await client.execute(tree=MENU_PACKAGE, inputs={"note": TREE_NOTE})
        report = await client.validate(tree=MENU_PACKAGE)
        started = await client.start(tree=MENU_PACKAGE, inputs={"note": TREE_NOTE})
        run = await wait_terminal(client, started.pipeline_run_id)
        results = await client.get_run_result(started.pipeline_run_id)
    assert_tree_menu(executed.main_stuff["text"])
    assert isinstance(report, PipelexValidationReport) and report.is_runnable
    assert run.status is RunStatus.COMPLETED
    assert isinstance(results, RunResultCompleted)
    assert_tree_menu(results.result.main_stuff["text"])


@pytest.mark.parametrize("deployment", ["none"], indirect=True)
async def test_the_sdk_reads_the_announced_tree_limits_and_a_bad_tree_is_a_readable_problem(deployment: Deployment, tmp_path: Path) -> None:
    async with deployment.pipelex() as client:
        limits = await client.method_tree_limits()
        assert (limits.max_files, limits.max_file_bytes, limits.max_total_bytes) == (1000, 32 * 1024 * 1024, 64 * 1024 * 1024)
        package = tmp_path / "with_python"
        shutil.copytree(MENU_PACKAGE, package)
        (package / "kitchen" / "helper.py").write_text("import os\n")
        with pytest.raises(ApiResponseError) as refused:
            await client.execute(tree=package, inputs={"note": TREE_NOTE})
        assert refused.value.status == 422
        assert refused.value.problem.code == "pipelex.deployment.custom_code_requires_sandbox"
        assert refused.value.problem.params.model_extra["path"] == "kitchen/helper.py"
        # the server still serves
        assert_tree_menu((await client.execute(tree=MENU_PACKAGE, inputs={"note": TREE_NOTE})).main_stuff["text"])


@pytest.mark.parametrize("deployment", ["api_key"], indirect=True)
async def test_a_package_sent_by_hash_runs_from_the_uploaded_blobs(deployment: Deployment) -> None:
    from mthds.method_tree.lister import list_method_tree

    tree = list_method_tree(MENU_PACKAGE)
    async with deployment.mthds() as client:
        files = await client.prepare_files(tree, inline_max_bytes=0)  # every file uploaded, then sent by hash
        assert all(isinstance(entry, HashFileEntry) for entry in files.values())
        executed = await client.execute(files=files, inputs={"note": TREE_NOTE})
    main = executed.pipe_output.working_memory.root[executed.model_extra["main_stuff_name"]]
    assert_tree_menu(main.content["text"])
