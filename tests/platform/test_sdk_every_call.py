"""Every public async call of the official SDK's ``PipelexAPIClient`` against a live server (AUTH_MODE=jwt, and
AUTH_MODE=keys with a key minted by ``pipelex-server keys create``): each one
either succeeds or raises an ``ApiResponseError`` whose problem is the server's own problem document (a complete one,
read from the body), never one the SDK had to make up from the status (``client.response_unreadable`` and the like).
The hosted-only calls answer a final 501 ``runtime.unsupported``; a call the SDK adds later fails this test until it is
listed here."""

from __future__ import annotations

import base64
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pipelex_sdk.artifact_models import DownloadArtifactsOptions
from pipelex_sdk.client import PipelexAPIClient
from pipelex_sdk.crate_models import CodegenRequest, PipeIORequest, ResolveRequest
from pipelex_sdk.errors import ApiResponseError
from pipelex_sdk.product_models import (
    FileLinkTarget,
    MethodDraftInput,
    MethodWriteInput,
    OnboardingSubmission,
    OrganizationBrandingUpdate,
    UpdateRunInput,
    UploadInput,
)

from tests.platform.test_keys_sdk import cli_mint
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT
from tests.support.catalog import jwt_env, sdk
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

FILES = {"hello.mthds": SEED_BUNDLE}
# Calls whose every answer other tests already read through the SDK (protocol, blobs and tooling routes), each with
# the test that does; they are left out here to keep this test's cost down.
COVERED_ELSEWHERE = {
    "close": "no request",
    "missing_blobs": "tests/api/test_blob_routes.py",
    "upload_blob": "tests/api/test_blob_routes.py",
    "start_and_wait": "tests/test_protocol_clients.py",
    "wait_for_result": "tests/platform/test_files_sdk.py",
    "write_method_tree": "tests/platform/test_catalog_sdk.py",
}
# What answers "this server does not offer it": a final 501 naming the capability
UNSUPPORTED = {
    "change_plan",
    "create_checkout",
    "copy_method",
    "copy_file_into_draft",
    "get_file_archive",
    "request_file_archive",
    "update_run",
    "create_organization",
    "get_billing_portal",
    "get_subscription",
    "list_invoices",
    "list_method_copies",
    "list_plans",
    "rename_organization",
    "submit_onboarding",
    "update_organization_branding",
}


def public_async_calls() -> set[str]:
    """The client's public coroutines and async iterators, and the two listing helpers that hand back one."""
    return {"iterate_files", "iterate_method_examples"} | {
        name
        for name, member in inspect.getmembers(PipelexAPIClient)
        if not name.startswith("_") and (inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member))
    }


@pytest.fixture(scope="module", params=["jwt", "keys"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[ServerProcess]:
    env = jwt_env(stub.base_url) if request.param == "jwt" else {"OPENAI_BASE_URL": stub.base_url, "AUTH_MODE": "keys"}
    with ServerProcess(tmp_path_factory.mktemp(f"every-call-{request.param}"), env=env) as running:
        yield running


def client_of(server: ServerProcess) -> PipelexAPIClient:
    """A new caller's client: a JWT of its own, or its first key minted by the operator's command."""
    user = f"every-{uuid.uuid4().hex[:8]}"
    if server.env.get("AUTH_MODE") != "keys":
        return sdk(server, user)
    key = cli_mint(server, user, "every call")["api_key"]
    return PipelexAPIClient(api_key=key, base_url=server.url, request_timeout_seconds=60)


def calls(client: PipelexAPIClient, state: dict[str, Any], tmp: Path) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of each public method, in an order where later calls use what earlier ones made (``state``)."""
    onboarding = {
        "role": "other",
        "use_case": "x",
        "process_to_transform": "x",
        "input_types": [],
        "material_domain": "x",
        "current_tool": "other",
        "heard_from": "other",
    }

    async def iterate(generator: Any) -> list[Any]:
        return [item async for item in generator]

    return {
        "health": client.health,
        "version": client.version,
        "models": client.models,
        "get_me": client.get_me,
        "method_tree_limits": client.method_tree_limits,
        "list_method_tree": lambda: client.list_method_tree(state["tree_dir"]),
        "prepare_files": lambda: client.prepare_files(state["tree"]),
        "prepare_files_from_contents": lambda: client.prepare_files_from_contents({"hello.mthds": SEED_BUNDLE.encode()}),
        "create_method": lambda: client.create_method(MethodWriteInput(name="Every call", files=FILES)),
        "list_methods": client.list_methods,
        "iterate_methods": lambda: iterate(client.iterate_methods()),
        "get_method": lambda: client.get_method(state["method_id"]),
        "rename_method": lambda: client.rename_method(state["method_id"], "Every call renamed"),
        "write_draft": lambda: client.write_draft(state["method_id"], MethodDraftInput(files=FILES)),
        "publish_method": lambda: client.publish_method(state["method_id"], expected_draft_updated_at=state["draft_updated_at"]),
        "list_method_versions": lambda: client.list_method_versions(state["method_id"]),
        "get_method_version": lambda: client.get_method_version(state["method_id"], 1),
        "validate": lambda: client.validate(method_id=state["method_id"]),
        "execute": lambda: client.execute(method_id=state["method_id"], inputs={"text": SEED_TEXT}),
        "start": lambda: client.start(files=FILES, inputs={"text": SEED_TEXT}),
        "get_run_status": lambda: client.get_run_status(state["run_id"]),
        "get_run_progress": lambda: client.get_run_progress(state["run_id"]),
        "get_run_result": lambda: client.get_run_result(state["run_id"]),
        "get_run_detail": lambda: client.get_run_detail(state["run_id"]),
        "list_run_files": lambda: client.list_run_files(state["run_id"]),
        "list_runs": lambda: client.list_runs(state["method_id"], status=["COMPLETED"], created_by="me"),
        "iterate_runs": lambda: iterate(client.iterate_runs(state["method_id"])),
        "update_run": lambda: client.update_run(state["run_id"], UpdateRunInput(status="COMPLETED")),
        "download_artifacts": lambda: client.download_artifacts(
            dir_path=tmp / "artifacts", run_id=state["run_id"], options=DownloadArtifactsOptions(allow_http=True)
        ),
        "create_method_example": lambda: client.create_method_example(state["method_id"], name="One", inputs={"text": SEED_TEXT}),
        "list_method_examples": lambda: client.list_method_examples(state["method_id"]),
        "iterate_method_examples": lambda: iterate(client.iterate_method_examples(state["method_id"])),
        "get_method_example": lambda: client.get_method_example(state["method_id"], state["example_id"]),
        "update_method_example": lambda: client.update_method_example(state["method_id"], state["example_id"], name="Two"),
        "record_method_example_latest_run": lambda: client.record_method_example_latest_run(
            state["method_id"], state["example_id"], run_id=state["run_id"], input_revision=state["input_revision"]
        ),
        "save_assistant_method_example": lambda: client.save_assistant_method_example(
            state["method_id"], name="Assistant", inputs={"text": SEED_TEXT}
        ),
        "delete_method_example": lambda: client.delete_method_example(state["method_id"], state["example_id"]),
        "upload": lambda: client.upload(
            UploadInput(filename="a.txt", data=base64.b64encode(b"every call").decode(), content_type="text/plain")
        ),
        "upload_file": lambda: client.upload_file(b"every call file", filename="b.txt", content_type="text/plain"),
        "prepare_inputs": lambda: client.prepare_inputs(files=FILES, inputs={"text": SEED_TEXT}),
        "list_files": client.list_files,
        "iterate_files": lambda: iterate(client.iterate_files()),
        "get_file": lambda: client.get_file(state["file_id"]),
        "get_files_by_uri": lambda: client.get_files_by_uri(state["file_uri"]),
        "rename_file": lambda: client.rename_file(state["file_id"], "renamed"),
        "link_files": lambda: client.link_files([FileLinkTarget(file_id=state["file_id"])]),
        "resolve_storage_url": lambda: client.resolve_storage_url(state["file_uri"]),
        "resolve_storage_urls_bulk": lambda: client.resolve_storage_urls_bulk([state["file_uri"]]),
        "resolve_artifacts": lambda: client.resolve_artifacts([state["file_uri"]]),
        "request_file_archive": lambda: client.request_file_archive(file_ids=[state["file_id"]]),
        "get_file_archive": lambda: client.get_file_archive("arc_0123456789"),
        "copy_file_into_draft": lambda: client.copy_file_into_draft(state["method_id"], file_id=state["file_id"], path="data/a.txt"),
        "resolve": lambda: client.resolve(ResolveRequest(files=FILES)),
        "pipe_io": lambda: client.pipe_io(PipeIORequest(files=FILES)),
        "codegen": lambda: client.codegen(CodegenRequest(files=FILES, target="python-pydantic")),
        "check_model_reference": lambda: client.check_model_reference("@default-general"),
        "create_pipelex_api_key": lambda: client.create_pipelex_api_key("every call"),
        "list_pipelex_api_keys": client.list_pipelex_api_keys,
        "rotate_pipelex_api_key": lambda: client.rotate_pipelex_api_key(state.get("key_id", "pk_unknown")),
        "revoke_pipelex_api_key": lambda: client.revoke_pipelex_api_key(state.get("key_id", "pk_unknown")),
        "list_memberships": client.list_memberships,
        "get_branding": client.get_branding,
        "delete_method": lambda: client.delete_method(state["method_id"]),
        # hosted-only
        "change_plan": lambda: client.change_plan("pro"),
        "create_checkout": lambda: client.create_checkout("pro"),
        "copy_method": lambda: client.copy_method(state["method_id"], destination_org_id="org_other"),
        "create_organization": lambda: client.create_organization("Org"),
        "get_billing_portal": client.get_billing_portal,
        "get_subscription": client.get_subscription,
        "list_invoices": client.list_invoices,
        "list_method_copies": lambda: client.list_method_copies(state["method_id"]),
        "list_plans": client.list_plans,
        "rename_organization": lambda: client.rename_organization("org_1", "Org"),
        "submit_onboarding": lambda: client.submit_onboarding(OnboardingSubmission.model_validate(onboarding)),
        "update_organization_branding": lambda: client.update_organization_branding("org_1", OrganizationBrandingUpdate()),
    }


def remember(name: str, answer: Any, state: dict[str, Any]) -> None:
    if name == "list_method_tree":
        state["tree"] = answer
    elif name == "create_method":
        state["method_id"], state["draft_updated_at"] = answer.method_id, answer.updated_at
    elif name == "write_draft":
        state["draft_updated_at"] = answer.updated_at
    elif name == "execute":
        state["run_id"] = answer.pipeline_run_id
    elif name == "create_method_example":
        state["example_id"], state["input_revision"] = answer.example_id, answer.input_revision
    elif name == "upload":
        state["file_id"], state["file_uri"] = answer.file_id, answer.uri
    elif name in ("create_pipelex_api_key", "rotate_pipelex_api_key"):
        state["key_id"] = answer.id


def server_problem(error: ApiResponseError) -> dict[str, Any] | None:
    """The body when it is a complete problem document, else None."""
    try:
        body = json.loads(error.response_body)
    except ValueError:
        return None
    complete = isinstance(body, dict) and all(member in body for member in ("type", "title", "status", "code", "domain", "retry"))
    return body if complete and body["code"] == error.problem.code else None


async def test_every_public_call_succeeds_or_reads_the_servers_problem(server: ServerProcess, tmp_path: Path) -> None:
    tree_dir = tmp_path / "tree"
    tree_dir.mkdir()
    (tree_dir / "hello.mthds").write_text(SEED_BUNDLE)
    state: dict[str, Any] = {"tree_dir": tree_dir}
    outcomes: dict[str, str] = {}
    async with client_of(server) as client:
        table = calls(client, state, tmp_path)
        assert public_async_calls() - set(COVERED_ELSEWHERE) == set(table), "a public SDK call is not probed here"
        for name, call in table.items():
            try:
                remember(name, await call(), state)
                outcomes[name] = "ok"
            except ApiResponseError as error:
                problem = server_problem(error)
                outcomes[name] = f"{error.status} {error.problem.code}" if problem else f"UNREADABLE {error.status} {error.problem.code}"
    unreadable = {name: outcome for name, outcome in outcomes.items() if outcome.startswith("UNREADABLE")}
    assert not unreadable, unreadable
    assert {name for name in UNSUPPORTED if outcomes[name] != "501 runtime.unsupported"} == set(), outcomes
    keys = ("create_pipelex_api_key", "list_pipelex_api_keys", "rotate_pipelex_api_key", "revoke_pipelex_api_key")
    expected = "ok" if server.env.get("AUTH_MODE") == "keys" else "501 runtime.unsupported"
    assert {name: outcomes[name] for name in keys} == dict.fromkeys(keys, expected)
