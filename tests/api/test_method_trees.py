"""Method trees as a run source (`files`): a package with a METHODS.toml and two domains runs, validates and starts on
the /v1 and the seed routes; hash entries come from the caller's blobs; every refusal is a 4xx naming the file or
field, before anything runs or is stored; a started tree is kept as blobs and runs from them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelex_server.engine.method_tree import trees_base_dir
from pipelex_server.runs.model import RunRequest
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, package_files

NOTE = "grilled fish, lemon tart TOKEN-MENU"
CALLER = "shared"  # AUTH_MODE=none: every request is the shared caller


tree_of = package_files  # a fixture package as a `files` map


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main_text(answer: dict[str, Any]) -> str:
    return answer["pipe_output"]["working_memory"]["root"][answer["main_stuff_name"]]["content"]["text"]


def assert_menu_written(text: str) -> None:
    # the kitchen domain's card, written from what the drafting domain's exported pipe listed
    assert text.startswith("STUB: KITCHEN write a menu card for: STUB: DRAFTING"), text
    assert text.endswith("[TOKEN-MENU]"), text


def problem_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code, problem
    return problem


async def post_raw(client: httpx.AsyncClient, path: str, body: str) -> httpx.Response:
    return await client.post(path, content=body.encode(), headers={"content-type": "application/json"})


# ---------------------------------------------------------------- a package runs, validates, starts


async def test_a_package_runs_from_its_tree_on_the_protocol_and_the_seed_routes(client: httpx.AsyncClient) -> None:
    files = tree_of("menu_package")
    assert {"METHODS.toml", "README.md", "kitchen/menu.mthds", "drafting/dishes.mthds"} == set(files)

    # no pipe_code: the run starts at the manifest's main_pipe, as the runtime chooses it
    protocol = await client.post("/v1/execute", json={"files": files, "inputs": {"note": NOTE}})
    assert protocol.status_code == 200, protocol.text
    assert_menu_written(main_text(protocol.json()))

    seed = await client.post("/api/v1/pipeline/execute", json={"files": files, "inputs": {"note": NOTE}})
    assert seed.status_code == 200, seed.text
    assert seed.json()["pipeline_state"] == "COMPLETED"
    assert_menu_written(main_text(seed.json()))

    # a pipe named by its domain runs too (the drafting domain's exported pipe alone)
    named = await client.post("/v1/execute", json={"files": files, "pipe_code": "drafting.list_dishes", "inputs": {"note": NOTE}})
    assert named.status_code == 200, named.text
    assert main_text(named.json()).startswith("STUB: DRAFTING list the dishes in:")
    assert list(trees_base_dir().iterdir()) == []  # each run's written tree is removed when it ends


async def test_a_package_validates_from_its_tree(client: httpx.AsyncClient) -> None:
    files = tree_of("menu_package")
    protocol = await client.post("/v1/validate", json={"files": files})
    assert protocol.status_code == 200, protocol.text
    assert protocol.json()["is_valid"] is True, protocol.json()

    seed = await client.post("/api/v1/validate", json={"files": files})
    assert seed.status_code == 200, seed.text
    assert seed.json()["success"] is True, seed.json()

    broken = {**files, "drafting/dishes.mthds": files["drafting/dishes.mthds"].replace('type = "PipeLLM"', 'type = "PipeNope"')}
    verdict = await client.post("/v1/validate", json={"files": broken})
    assert verdict.status_code == 200 and verdict.json()["is_valid"] is False, verdict.text


async def test_base64_and_hash_entries_are_read_from_the_body_and_the_callers_blobs(client: httpx.AsyncClient, session_app: Any) -> None:
    files: dict[str, Any] = dict(tree_of("menu_package"))
    menu = (files["kitchen/menu.mthds"] + f"# {uuid.uuid4()}\n").encode()  # bytes no earlier run kept as a blob
    files["kitchen/menu.mthds"] = {"sha256": sha256(menu), "size": len(menu)}
    files["README.md"] = {"base64": base64.b64encode(files["README.md"].encode()).decode()}
    data = uuid.uuid4().bytes * 3  # any file type: bytes no step reads
    files["data/blob.bin"] = {"sha256": sha256(data), "size": len(data)}

    # the blobs are not held yet: one 422 naming every missing hash, nothing runs
    missing = await client.post("/v1/execute", json={"files": files, "inputs": {"note": NOTE}})
    problem = problem_of(missing, 422, "request.blobs_missing")
    assert problem["params"]["missing_blobs"] == sorted([sha256(menu), sha256(data)])

    await session_app.services.engine.blobs.put(CALLER, menu)
    await session_app.services.engine.blobs.put(CALLER, data)
    held = await client.post("/v1/execute", json={"files": files, "inputs": {"note": NOTE}})
    assert held.status_code == 200, held.text
    assert_menu_written(main_text(held.json()))


@pytest.mark.slow
async def test_a_started_tree_is_kept_as_blobs_runs_to_completion_and_a_retry_stores_nothing(
    client: httpx.AsyncClient, session_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = session_app.services
    files = tree_of("menu_package")
    files["kitchen/notes.txt"] = f"a file no step reads {uuid.uuid4()}"  # content never seen before this test
    body = {"files": files, "inputs": {"note": NOTE}}
    key = f"tree-{uuid.uuid4().hex}"
    puts: list[str] = []
    real_put = services.store.put

    async def counting_put(object_key: str, data: bytes, **kwargs: Any) -> None:
        puts.append(object_key)
        await real_put(object_key, data, **kwargs)

    monkeypatch.setattr(services.store, "put", counting_put)
    started = await client.post("/v1/start", json=body, headers={"Idempotency-Key": key})
    assert started.status_code == 202, started.text
    run_id = started.json()["pipeline_run_id"]
    blob_puts = [object_key for object_key in puts if "/blobs/" in object_key]
    assert f"{CALLER}/blobs/{sha256(files['kitchen/notes.txt'].encode())[:2]}/{sha256(files['kitchen/notes.txt'].encode())}" in blob_puts

    # the stored request names the files by hash, never carries their bytes
    row = await services.runs.repository.get_public(CALLER, run_id)
    stored = RunRequest.from_json(row["request"])
    assert stored.tree == {path: sha256(text.encode()) for path, text in files.items()}
    assert stored.tree_digest and stored.tree_digest.startswith("sha256:")
    assert files["kitchen/notes.txt"] not in json.dumps(row["request"]) and "DRAFTING" not in json.dumps(row["request"])

    for _ in range(600):
        document = (await client.get(f"/v1/runs/{run_id}/status")).json()
        if document["status"] not in ("PENDING", "RUNNING"):
            break
        await asyncio.sleep(0.05)
    assert document["status"] == "COMPLETED", document
    results = (await client.get(f"/v1/runs/{run_id}/results")).json()
    assert_menu_written(results["main_stuff"]["text"])

    # a retried /start (same key, same body) is the same run: nothing checked or stored again
    puts.clear()
    again = await client.post("/v1/start", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 202 and again.json()["pipeline_run_id"] == run_id
    assert [object_key for object_key in puts if "/blobs/" in object_key] == []

    # what a worker on another host does: the tree read back from the blobs alone runs the same method
    tree = await services.engine.stored_method_tree(stored.tree, scope=CALLER)
    assert tree.digest == stored.tree_digest
    outcome = await services.engine.execute(
        **stored.engine_arguments(), scope=CALLER, storage_scope=f"{CALLER}/runs/{run_id}-replay", request_id=None, tree=tree
    )
    assert_menu_written(outcome.pipe_output["working_memory"]["root"][outcome.main_stuff_name]["content"]["text"])


async def test_a_tree_whose_blobs_are_gone_is_refused_by_name(session_app: Any) -> None:
    gone = sha256(uuid.uuid4().bytes)
    with pytest.raises(Exception) as refused:
        await session_app.services.engine.stored_method_tree({"a.mthds": gone}, scope=CALLER)
    assert getattr(refused.value, "code", None) == "request.blobs_missing"
    assert refused.value.members["params"]["missing_blobs"] == [gone]


# ---------------------------------------------------------------- bad input: a 4xx naming the file or field


SEED = {"hello.mthds": SEED_BUNDLE}

BAD_TREES: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "parent_segment": ({**SEED, "../evil.mthds": SEED_BUNDLE}, "security.input_path_refused", {"rule": "parent_segment"}),
    "absolute": ({**SEED, "/etc/evil.mthds": SEED_BUNDLE}, "security.input_path_refused", {"rule": "rooted"}),
    "backslash": ({**SEED, "a\\b.mthds": SEED_BUNDLE}, "method.package_invalid", {"reason": "invalid_tree_path", "path": "a\\b.mthds"}),
    "case_collision": ({**SEED, "Hello.mthds": SEED_BUNDLE}, "method.package_invalid", {"reason": "path_collision"}),
    "excluded_name": ({**SEED, ".git/config": "x"}, "method.package_invalid", {"reason": "excluded_name", "path": ".git/config"}),
    "python_file": (
        {**SEED, "tools/helper.py": "import os\n"},
        "pipelex.deployment.custom_code_requires_sandbox",
        {"path": "tools/helper.py"},
    ),
    "unparsable_manifest": (
        {**SEED, "METHODS.toml": "[package\n"},
        "method.package_invalid",
        {"reason": "manifest_invalid", "path": "METHODS.toml"},
    ),
    "malformed_entry": ({**SEED, "notes.txt": {"text": "x"}}, "request.invalid", {"field": "files"}),
    "empty": ({}, "method.package_invalid", {"reason": "empty_tree"}),
}


@pytest.mark.parametrize("route", ["/v1/execute", "/v1/start", "/v1/validate", "/api/v1/pipeline/start", "/api/v1/validate"])
@pytest.mark.parametrize("case", sorted(BAD_TREES))
async def test_a_bad_tree_is_a_4xx_naming_the_file_and_the_server_still_serves(client: httpx.AsyncClient, route: str, case: str) -> None:
    files, code, params = BAD_TREES[case]
    body: dict[str, Any] = {"files": files}
    if "validate" not in route:
        body["inputs"] = {"text": SEED_TEXT}
    problem = problem_of(await client.post(route, json=body), 422, code)
    assert params.items() <= problem["params"].items(), problem
    if route.startswith("/v1/"):
        assert {"domain", "retry", "next_step"} <= problem.keys()  # complete for protocol readers
    healthy = await client.post("/v1/execute", json={"files": SEED, "inputs": {"text": SEED_TEXT}})
    assert healthy.status_code == 200, healthy.text


async def test_a_python_file_is_refused_before_anything_is_stored(client: httpx.AsyncClient, session_app: Any) -> None:
    source = f"print('{uuid.uuid4()}')\n"
    files = {**SEED, "helper.py": source}
    refused = await client.post("/v1/start", json={"files": files, "inputs": {"text": SEED_TEXT}})
    problem_of(refused, 422, "pipelex.deployment.custom_code_requires_sandbox")
    assert await session_app.services.engine.blobs.get(CALLER, sha256(source.encode())) is None
    assert await session_app.services.engine.blobs.get(CALLER, sha256(SEED_BUNDLE.encode() + b"never")) is None


async def test_a_key_given_twice_is_refused(client: httpx.AsyncClient) -> None:
    entry = json.dumps(SEED_BUNDLE)
    body = '{"files": {"hello.mthds": ' + entry + ', "hello.mthds": ' + entry + '}, "inputs": {"text": "x"}}'
    for route in ("/v1/execute", "/api/v1/pipeline/execute"):
        problem = problem_of(await post_raw(client, route, body), 422, "method.package_invalid")
        assert problem["params"]["reason"] == "duplicate_key" and problem["params"]["path"] == "hello.mthds"


async def test_files_and_mthds_contents_together_are_refused(client: httpx.AsyncClient) -> None:
    for route in ("/v1/execute", "/api/v1/pipeline/execute", "/api/v1/pipeline/start", "/api/v1/validate", "/v1/validate"):
        body: dict[str, Any] = {"files": SEED, "mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}}
        if "validate" in route:
            del body["inputs"]
        problem = problem_of(await client.post(route, json=body), 422, "request.invalid")
        assert problem["params"]["field"] == "files"


async def test_a_missing_referenced_file_is_named(client: httpx.AsyncClient) -> None:
    files = tree_of("report_package")
    del files["templates/report.html"]
    for route in ("/v1/execute", "/v1/start", "/api/v1/pipeline/execute"):
        problem = problem_of(await client.post(route, json={"files": files, "inputs": {"text": SEED_TEXT}}), 422, "method.invalid")
        (fault,) = problem["errors"]
        assert fault["code"] == "method.resource_missing"
        assert fault["params"] == {"file": "templates/report.html", "reason": "not_in_tree"}
        assert fault["location"] == {"pipe": "print_report", "file": "report.mthds"}  # tree paths, never our temp dir
    verdict = (await client.post("/v1/validate", json={"files": files})).json()
    assert verdict["is_valid"] is False and verdict["errors"][0]["params"]["file"] == "templates/report.html"
    assert list(trees_base_dir().iterdir()) == []  # removed after a refusal too


async def test_a_present_template_goes_as_far_as_the_runtime_goes(client: httpx.AsyncClient) -> None:
    # no document engine prints an HTML template here: the official server answers 501 pipelex.docgen.engine_unavailable
    answer = await client.post("/v1/execute", json={"files": tree_of("report_package"), "inputs": {"text": SEED_TEXT}})
    problem_of(answer, 501, "pipelex.docgen.engine_unavailable")


async def test_tree_limits_hold_on_stated_sizes_and_are_announced(make_app: Any) -> None:
    app = await make_app(max_method_tree_files=3, max_method_tree_file_kib=1, max_method_tree_total_kib=2)
    version = (await app.client.get("/v1/version")).json()
    assert version["limits"]["method_tree"] == {"max_files": 3, "max_file_bytes": 1024, "max_total_bytes": 2048}

    too_many = {f"f{index}.txt": "x" for index in range(4)}
    problem = problem_of(await app.client.post("/v1/execute", json={"files": too_many}), 422, "method.package_invalid")
    assert problem["params"] == {"reason": "too_many_files", "limit": 3}

    # a hash entry is judged on the size it states: no blob is read for it
    stated = {**SEED, "big.bin": {"sha256": "0" * 64, "size": 5000}}
    problem = problem_of(await app.client.post("/v1/execute", json={"files": stated}), 422, "method.package_invalid")
    assert problem["params"] == {"reason": "file_too_large", "path": "big.bin", "limit": 1024}

    large = {"a.txt": "x" * 900, "b.txt": "y" * 900, "c.txt": "z" * 900}
    problem = problem_of(await app.client.post("/api/v1/pipeline/execute", json={"files": large}), 422, "method.package_invalid")
    assert problem["params"] == {"reason": "tree_too_large", "limit": 2048}

    ok = await app.client.post("/v1/execute", json={"files": SEED, "inputs": {"text": SEED_TEXT}})
    assert ok.status_code == 200, ok.text


# ---------------------------------------------------------------- Temporal mode: a worker with no shared disk


@pytest.mark.slow
@pytest.mark.temporal
async def test_a_tree_started_in_temporal_mode_runs_on_a_worker_that_shares_no_disk(
    stub: Any, postgres_url: str, s3_server: Any, tmp_path: Path
) -> None:
    from tests.support.temporal import no_shared_disk

    async with no_shared_disk(
        tmp_path, s3_server=s3_server, postgres_url=postgres_url, bucket_prefix="trees", env={"OPENAI_BASE_URL": stub.base_url}
    ) as (api, worker):
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
            files = tree_of("menu_package")
            started = await http.post("/v1/start", json={"files": files, "inputs": {"note": NOTE}})
            assert started.status_code == 202, started.text
            run_id = started.json()["pipeline_run_id"]
            for _ in range(1200):
                status = (await http.get(f"/v1/runs/{run_id}/status")).json()
                if status["status"] not in ("PENDING", "RUNNING"):
                    break
                await asyncio.sleep(0.05)
            assert status["status"] == "COMPLETED", (status, worker.log()[-3000:])
            results = (await http.get(f"/v1/runs/{run_id}/results")).json()
            assert_menu_written(results["main_stuff"]["text"])
