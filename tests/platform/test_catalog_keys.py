"""The catalog in AUTH_MODE=keys: two callers with keys minted by `pipelex-server keys create`, each seeing only its
own methods, versions and examples, and running only its own by `method_id` (official SDK, live server)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from pipelex_sdk.client import PipelexAPIClient
from pipelex_sdk.errors import ApiResponseError
from pipelex_sdk.product_models import MethodWriteInput

from tests.support.bundles import SEED_TEXT
from tests.support.catalog import SEED_FILES
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[ServerProcess]:
    env = {"OPENAI_BASE_URL": stub.base_url, "AUTH_MODE": "keys", "API_KEY": "catalog-bootstrap-key-0123456789abcdef"}
    with ServerProcess(tmp_path_factory.mktemp("catalog-keys"), env=env) as running:
        yield running


def mint(server: ServerProcess, caller: str) -> str:
    command = [sys.executable, "-m", "pipelex_server.cli", "keys", "create", "--caller", caller, "--label", "catalog"]
    done = subprocess.run(command, cwd=server.cwd, env=server.env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["api_key"]


async def test_each_key_holder_sees_and_runs_only_its_own_methods(server: ServerProcess) -> None:
    alice_key, bob_key = mint(server, "alice"), mint(server, "bob")
    async with PipelexAPIClient(api_key=alice_key, base_url=server.url, request_timeout_seconds=60) as alice:
        method = await alice.create_method(MethodWriteInput(name="Alice's", files=SEED_FILES))
        await alice.publish_method(method.method_id, expected_draft_updated_at=method.updated_at)
        example = await alice.create_method_example(method.method_id, name="one", inputs={"text": SEED_TEXT})
        ran = await alice.execute(method_id=method.method_id, inputs={"text": SEED_TEXT})
        assert ran.main_stuff["text"].startswith("STUB: Summarize")
        assert method.org_id == "alice"
    async with PipelexAPIClient(api_key=bob_key, base_url=server.url, request_timeout_seconds=60) as bob:
        assert (await bob.list_methods()).items == []
        for call in (
            bob.get_method(method.method_id),
            bob.get_method_version(method.method_id, 1),
            bob.get_method_example(method.method_id, example.example_id),
            bob.execute(method_id=f"{method.method_id}@1", inputs={"text": SEED_TEXT}),
            bob.validate(method_id=method.method_id),
        ):
            with pytest.raises(ApiResponseError) as refused:
                await call
            assert (refused.value.status, refused.value.problem.code) == (404, "pipelex.catalog.not_found")
