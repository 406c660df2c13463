"""The methods catalog through the official `PipelexAPIClient`, unchanged, against a live server (AUTH_MODE=jwt, two
callers): create, list, read with links, rename, draft writes with their token, publish (published, unchanged,
refused), versions, runs by `method_id`, isolation, and the publish race."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pipelex_sdk.errors import ApiResponseError
from pipelex_sdk.product_models import (
    MethodDraftInput,
    MethodPublished,
    MethodPublishRefused,
    MethodPublishUnchanged,
    MethodWriteInput,
)

from tests.support.bundles import SEED_BUNDLE, SEED_TEXT
from tests.support.catalog import INVALID_BUNDLE, SEED_FILES, headers, jwt_env, sdk
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

INPUTS = {"text": SEED_TEXT}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("catalog"), env=jwt_env(stub.base_url, MAX_METHOD_TREE_FILES="4")) as running:
        yield running


async def test_a_method_is_created_listed_read_renamed_and_its_draft_written_with_its_token(server: ServerProcess, tmp_path: Path) -> None:
    async with sdk(server, "alice") as client:
        created = await client.create_method(MethodWriteInput(name="Summarizer", files=SEED_FILES, input_data={"text": "hi"}))
        assert created.method_id.startswith("mt_")
        assert created.latest_version is None and created.latest_published is None
        assert created.draft_digest and created.draft_digest.startswith("sha256:")
        assert created.org_id == created.created_by_user_id == "alice"
        assert created.input_data == {"text": "hi"}
        empty = await client.create_method(MethodWriteInput(name="Empty one"))
        assert empty.draft_digest is None

        detail = await client.get_method(created.method_id)
        assert [(item.path, item.size) for item in detail.files] == [("hello.mthds", len(SEED_BUNDLE.encode()))]
        await client.write_method_tree(detail.files, destination=tmp_path / "copy")
        assert (tmp_path / "copy" / "hello.mthds").read_text() == SEED_BUNDLE
        assert (await client.get_method(empty.method_id)).files == []

        page = await client.list_methods()
        assert [item.method_id for item in page.items] == [empty.method_id, created.method_id]  # newest first
        assert page.next_cursor is None
        first = await client.list_methods(limit=1)
        second = await client.list_methods(limit=1, cursor=first.next_cursor)
        assert [first.items[0].method_id, second.items[0].method_id] == [empty.method_id, created.method_id]
        assert [item.method_id for item in (await client.list_methods(q="SUMMAR")).items] == [created.method_id]
        assert [item.method_id async for item in client.iterate_methods(published=False, limit=1)] == [empty.method_id, created.method_id]

        renamed = await client.rename_method(created.method_id, "Summarizer 2")
        assert renamed.name == "Summarizer 2" and renamed.updated_at == created.updated_at  # a rename moves no token

        stale_token = created.updated_at
        written = await client.write_draft(
            created.method_id,
            MethodDraftInput(contents={"hello.mthds": SEED_BUNDLE, "notes.md": "# notes\n"}, expected_updated_at=stale_token),
        )
        assert written.updated_at != stale_token and written.draft_digest != created.draft_digest
        assert written.input_data == {"text": "hi"}  # left out: kept
        with pytest.raises(ApiResponseError) as conflict:
            await client.write_draft(created.method_id, MethodDraftInput(files=SEED_FILES, expected_updated_at=stale_token))
        assert conflict.value.status == 409 and conflict.value.problem.code == "pipelex.catalog.update_conflict"
        cleared = await client.write_draft(created.method_id, MethodDraftInput(files=None, input_data=None))
        assert cleared.draft_digest is None and cleared.input_data is None


async def test_publish_answers_published_unchanged_and_refused_and_versions_are_immutable(server: ServerProcess) -> None:
    async with sdk(server, "alice") as client:
        method = await client.create_method(MethodWriteInput(name="Versioned", files=SEED_FILES))
        with pytest.raises(ApiResponseError) as stale:
            await client.publish_method(method.method_id, expected_draft_updated_at="2020-01-01T00:00:00.000000Z")
        assert stale.value.status == 409 and stale.value.problem.code == "pipelex.catalog.update_conflict"

        first = await client.publish_method(method.method_id, expected_draft_updated_at=method.updated_at)
        assert isinstance(first, MethodPublished) and first.version.version == 1
        assert first.version.tree_digest == method.draft_digest and first.method.latest_version == 1
        resolved = httpx.post(f"{server.url}/v1/resolve", json={"files": SEED_FILES}, headers=headers("alice"), timeout=60)
        assert first.version.crate_fingerprint == resolved.json()["crate"]["fingerprint"]  # the version's meaning
        assert first.method.updated_at == method.updated_at  # a publish moves no token
        again = await client.publish_method(method.method_id, expected_draft_updated_at=method.updated_at)
        assert isinstance(again, MethodPublishUnchanged) and again.version.version == 1

        broken = await client.write_draft(method.method_id, MethodDraftInput(files={"hello.mthds": INVALID_BUNDLE}))
        refused = await client.publish_method(method.method_id, expected_draft_updated_at=broken.updated_at)
        assert isinstance(refused, MethodPublishRefused) and refused.reason == "invalid"
        assert refused.validation.is_valid is False and refused.method.latest_version == 1

        fixed = await client.write_draft(method.method_id, MethodDraftInput(contents={"hello.mthds": SEED_BUNDLE, "README.md": "v2\n"}))
        second = await client.publish_method(method.method_id, expected_draft_updated_at=fixed.updated_at)
        assert isinstance(second, MethodPublished) and second.version.version == 2

        versions = await client.list_method_versions(method.method_id, limit=1)
        assert [item.version for item in versions.items] == [2] and versions.next_cursor
        older = await client.list_method_versions(method.method_id, cursor=versions.next_cursor)
        assert [item.version for item in older.items] == [1] and older.next_cursor is None
        one = await client.get_method_version(method.method_id, 1)
        assert [item.path for item in one.files] == ["hello.mthds"] and one.tree_digest == method.draft_digest
        with pytest.raises(ApiResponseError) as missing:
            await client.get_method_version(method.method_id, 9)
        assert missing.value.status == 404 and missing.value.problem.code == "pipelex.catalog.not_found"

    with httpx.Client(base_url=server.url, headers=headers("alice")) as http:
        tampered = http.get(f"/v1/methods/{method.method_id}/versions", params={"cursor": "bm90LWEtY3Vyc29y"})
        assert tampered.status_code == 400 and tampered.json()["code"] == "request.invalid"
        assert http.get("/v1/methods", params={"cursor": "%%%"}).status_code == 400


async def test_a_method_runs_by_id_latest_fixed_version_or_draft_and_the_run_records_which(server: ServerProcess) -> None:
    async with sdk(server, "alice") as client:
        method = await client.create_method(MethodWriteInput(name="Runnable", files=SEED_FILES))
        bare = method.method_id
        with pytest.raises(ApiResponseError) as unpublished:
            await client.execute(method_id=bare, inputs=INPUTS)
        assert unpublished.value.status == 409 and unpublished.value.problem.code == "pipelex.catalog.not_published"

        draft_run = await client.execute(method_id=f"{bare}@draft", inputs=INPUTS)
        assert draft_run.main_stuff["text"].startswith("STUB: Summarize")
        await client.publish_method(bare, expected_draft_updated_at=method.updated_at)
        await client.write_draft(bare, MethodDraftInput(files={"hello.mthds": INVALID_BUNDLE}))  # the bare id still runs v1
        latest = await client.execute(method_id=bare, inputs=INPUTS)
        fixed = await client.start(method_id=f"{bare}@1", inputs=INPUTS)
        verdict = await client.validate(method_id=bare)
        assert verdict.is_valid
        # a version keeps one tree digest: the run names its tree by the digest the version was published under
        version_one = await client.get_method_version(bare, 1)
        assert (await client.get_run_detail(latest.pipeline_run_id)).tree_digest == version_one.tree_digest == method.draft_digest
        with pytest.raises(ApiResponseError) as unknown_version:
            await client.execute(method_id=f"{bare}@7", inputs=INPUTS)
        assert unknown_version.value.status == 404

    with httpx.Client(base_url=server.url, headers=headers("alice"), timeout=60) as http:
        recorded = {
            run_id: http.get(f"/api/v1/runs/{run_id}").json()
            for run_id in (draft_run.pipeline_run_id, latest.pipeline_run_id, fixed.pipeline_run_id)
        }
        assert [(run["method_id"], run["method_version"]) for run in recorded.values()] == [(bare, "draft"), (bare, "1"), (bare, "1")]
        seed = http.post("/api/v1/pipeline/execute", json={"method_id": bare, "inputs": INPUTS})
        assert seed.status_code == 200, seed.text
        assert http.get(f"/api/v1/runs/{seed.json()['pipeline_run_id']}").json()["method_version"] == "1"
        assert http.post("/api/v1/validate", json={"method_id": f"{bare}@draft"}).json()["success"] is False
        both = http.post("/v1/execute", json={"method_id": f"{bare}@1", "files": SEED_FILES, "inputs": INPUTS})
        assert both.status_code == 422 and both.json()["params"]["field"] == "method_id"
        beside = http.post("/v1/execute", json={"method_id": bare, "mthds_contents": [SEED_BUNDLE], "inputs": INPUTS})
        assert beside.status_code == 422
        malformed = http.post("/v1/execute", json={"method_id": f"{bare}@01", "inputs": INPUTS})
        assert malformed.status_code == 422 and malformed.json()["params"]["reason"] == "not_a_version"
        with_tree = http.post("/v1/execute", json={"method_id": bare, "files": SEED_FILES, "inputs": INPUTS})
        assert with_tree.status_code == 200
        ran = http.get(f"/api/v1/runs/{with_tree.json()['pipeline_run_id']}").json()
        assert (ran["method_id"], ran.get("method_version")) == (bare, None)


async def test_another_caller_sees_the_same_404_as_for_an_unknown_method(server: ServerProcess) -> None:
    async with sdk(server, "alice") as alice:
        method = await alice.create_method(MethodWriteInput(name="Private", files=SEED_FILES))
        await alice.publish_method(method.method_id, expected_draft_updated_at=method.updated_at)
    async with sdk(server, "bob") as bob:
        assert all(item.method_id != method.method_id for item in (await bob.list_methods()).items)
        for call in (
            bob.get_method(method.method_id),
            bob.get_method("mt_doesnotexist"),
            bob.rename_method(method.method_id, "mine"),
            bob.list_method_versions(method.method_id),
            bob.delete_method(method.method_id),
            bob.execute(method_id=method.method_id, inputs=INPUTS),
        ):
            with pytest.raises(ApiResponseError) as refused:
                await call
            assert refused.value.status == 404 and refused.value.problem.code == "pipelex.catalog.not_found"
    async with sdk(server, "alice") as alice:
        assert (await alice.get_method(method.method_id)).name == "Private"


async def test_two_concurrent_publishers_of_one_draft_write_one_version(server: ServerProcess) -> None:
    async with sdk(server, "alice") as first, sdk(server, "alice") as second:
        method = await first.create_method(MethodWriteInput(name="Raced", files=SEED_FILES))
        results = await asyncio.gather(
            first.publish_method(method.method_id, expected_draft_updated_at=method.updated_at),
            second.publish_method(method.method_id, expected_draft_updated_at=method.updated_at),
        )
        assert sorted(result.outcome for result in results) == ["published", "unchanged"]
        assert {result.version.version for result in results} == {1}
        versions = await first.list_method_versions(method.method_id)
        assert [item.version for item in versions.items] == [1]


async def test_signed_file_links_refuse_tampering(server: ServerProcess) -> None:
    async with sdk(server, "alice") as client:
        method = await client.create_method(MethodWriteInput(name="Linked", files=SEED_FILES))
        url = (await client.get_method(method.method_id)).files[0].url
    with httpx.Client() as http:
        assert http.get(url).content == SEED_BUNDLE.encode()
        for part, replacement in (("scope=alice", "scope=bob"), ("signature=", "signature=0"), ("expires=", "expires=1")):
            assert http.get(url.replace(part, replacement, 1)).status_code == 403


def test_bad_input_is_a_problem_naming_the_field(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, headers=headers("alice"), timeout=60) as http:

        def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
            assert (response.status_code, response.json()["code"]) == (status, code), response.text
            problem = response.json()
            assert {"type", "title", "status", "detail", "domain", "retry", "next_step"} <= set(problem)
            assert None not in problem.values()
            return problem

        assert refused(http.post("/v1/methods", json={"name": " "}), 422, "request.invalid")["params"]["field"] == "name"
        assert refused(http.post("/v1/methods", json={"name": "x" * 201}), 422, "request.invalid")["params"]["field"] == "name"
        refused(http.post("/v1/methods", json={"name": "m", "mthds": "old field"}), 422, "request.invalid")
        too_many = {f"f{index}.md": "x" for index in range(5)}
        problem = refused(http.post("/v1/methods", json={"name": "m", "files": too_many}), 422, "method.package_invalid")
        assert problem["params"]["reason"] == "too_many_files"
        escaping = refused(http.post("/v1/methods", json={"name": "m", "files": {"../x.mthds": "x"}}), 422, "security.input_path_refused")
        assert escaping["params"]["path"] == "../x.mthds"
        created = http.post("/v1/methods", json={"name": "notes only", "files": {"notes.md": "# hi"}}).json()
        publish = http.post(f"/v1/methods/{created['method_id']}/publish", json={"expected_draft_updated_at": created["updated_at"]})
        refused(publish, 422, "method.package_invalid")
        refused(http.post(f"/v1/methods/{created['method_id']}/publish", json={}), 422, "request.invalid")
        refused(
            http.put(f"/v1/methods/{created['method_id']}/draft", json={"files": {"a.md": "x"}, "input_data": [1]}), 422, "request.invalid"
        )
        refused(http.get(f"/v1/methods/{created['method_id']}/versions", params={"limit": 101}), 422, "request.invalid")
        refused(http.post("/v1/execute", json={"method_id": 3, "inputs": {}}), 422, "request.invalid")
        refused(http.post("/v1/execute", json={"method_id": "nope", "inputs": {}}), 422, "request.invalid")
        examples = f"/v1/methods/{created['method_id']}/examples"
        refused(http.post(examples, json={"name": "e", "inputs": [1]}), 422, "request.invalid")
        example = http.post(examples, json={"name": "e", "inputs": {}}).json()
        latest = http.put(f"{examples}/{example['example_id']}/latest-run", json={"run_id": "r", "input_revision": True})
        refused(latest, 422, "request.invalid")
        refused(http.get(f"{examples}/ex_{'0' * 80}"), 422, "request.invalid")
        refused(http.get(f"{examples}/ex_unknown"), 404, "pipelex.catalog.not_found")
