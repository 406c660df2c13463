"""The official `PipelexAPIClient`, unchanged, calling the crate and tool routes of a live server (API-key auth): `resolve`,
`pipe_io` and `codegen` on a method package sent as a directory (`tree=`), `check_model_reference`; and `/v1/lint` and
`/v1/format`, which the SDK does not wrap, over plain HTTP as an editor sends them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipelex.codegen.check import run_codegen_check
from pipelex_sdk.client import PipelexAPIClient
from pipelex_sdk.codegen_writer import write_codegen_tree
from pipelex_sdk.crate_models import CodegenRequest, CodegenValidReport, CrateInvalidReport, PipeIORequest, ResolveRequest
from pipelex_sdk.errors import ApiResponseError

from tests.api.test_tool_routes import BAD_TOML, TREE
from tests.support.bundles import SEED_BUNDLE
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

API_KEY = "tool-clients-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[ServerProcess]:
    env = {"OPENAI_BASE_URL": stub.base_url, "AUTH_MODE": "api_key", "API_KEY": API_KEY}
    with ServerProcess(tmp_path_factory.mktemp("tool-clients"), env=env) as running:
        yield running


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """The greetings package as a directory: METHODS.toml, two bundles in two domains, and a file no bundle reads."""
    root = tmp_path / "greetings"
    for path, text in TREE.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def client_of(server: ServerProcess, key: str = API_KEY) -> PipelexAPIClient:
    return PipelexAPIClient(api_key=key, base_url=server.url, request_timeout_seconds=60)


def test_the_sdk_resolves_describes_and_projects_a_package_directory(server: ServerProcess, package: Path, tmp_path: Path) -> None:
    async def calls() -> None:
        sdk = client_of(server)
        resolved = await sdk.resolve(ResolveRequest(tree=package))
        assert resolved.is_valid, resolved
        crate: Any = resolved.crate
        fingerprint = crate["fingerprint"] if isinstance(crate, dict) else crate.fingerprint
        assert len(fingerprint) == 64

        described = await sdk.pipe_io(PipeIORequest(tree=package))
        assert described.is_valid, described
        assert (described.pipe_ref, described.default_pipe_ref) == ("greeting.greet", "greeting.greet")
        whole = await sdk.pipe_io(PipeIORequest(tree=package, all_pipes=True, include_files=True))
        assert whole.is_valid and sorted(whole.input_form) == ["greeting.draft", "greeting.greet", "wording.polish"]

        for target in ("ts-zod", "python-pydantic", "python-structures"):
            projected = await sdk.codegen(CodegenRequest(tree=package, target=target))
            assert isinstance(projected, CodegenValidReport), projected
            assert projected.crate_fingerprint == fingerprint
            output = tmp_path / target
            write_codegen_tree(projected, output_dir=output)
            check = run_codegen_check(root=output)  # the offline drift check passes on what was written verbatim
            assert not check.drifts, check

        invalid = await sdk.resolve(ResolveRequest(contents={"bad.mthds": BAD_TOML}))
        assert isinstance(invalid, CrateInvalidReport) and invalid.errors[0].code == "method.syntax"

        with pytest.raises(ApiResponseError) as refused:
            await sdk.pipe_io(PipeIORequest(tree=package, pipe_ref="nope"))
        assert (refused.value.status, refused.value.problem.code) == (422, "request.pipe_not_found")

        with pytest.raises(ApiResponseError) as unauthenticated:
            await client_of(server, key="wrong-key").resolve(ResolveRequest(tree=package))
        assert (unauthenticated.value.status, unauthenticated.value.problem.code) == (401, "auth.invalid_credential")

    asyncio.run(calls())


def test_the_sdk_checks_model_references(server: ServerProcess) -> None:
    async def calls() -> None:
        sdk = client_of(server)
        deck = (await asyncio.to_thread(lambda: server.client(headers={"Authorization": f"Bearer {API_KEY}"}).get("/v1/models"))).json()
        alias = next(iter(deck["aliases"]["llm"]))
        verdict = await sdk.check_model_reference(f"@{alias}")
        assert verdict.kind == "alias" and str(verdict.resolution).lower().endswith("resolved")
        in_llm = await sdk.check_model_reference(f"@{alias}", category="llm")
        assert in_llm.matches and in_llm.matches[0].category == "llm"
        unknown = await sdk.check_model_reference("no-such-model-anywhere")
        assert str(unknown.resolution).lower().endswith("not_found") and not unknown.matches
        with pytest.raises(ApiResponseError) as refused:
            await sdk.check_model_reference("$")
        assert (refused.value.status, refused.value.problem.code) == (422, "request.invalid")

    asyncio.run(calls())


def test_an_editor_lints_and_formats_over_http(server: ServerProcess) -> None:
    with server.client(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        assert http.post("/v1/lint", json={"content": SEED_BUNDLE}).json() == {"diagnostics": []}
        assert http.post("/v1/lint", json={"content": BAD_TOML}).json()["diagnostics"][0]["kind"] == "syntax"
        formatted = http.post("/v1/format", json={"content": SEED_BUNDLE, "options": {"column_width": 100}}).json()
        assert formatted["changed"] is True and formatted["diagnostics"] == []
        crash = http.post("/v1/lint", json={"content": 'a = "x\nb = ' + "[" * 200_000})
        assert crash.status_code == 422 and crash.json()["code"] == "request.invalid", crash.text
        assert http.get("/health").status_code == 200  # the server outlived the text that crashes the parser
