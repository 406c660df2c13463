"""The run sources beside `files`: a `bundle_b64` zip (its shipped packages under `.mthds/methods/` its dependencies),
`resources` (joined to a tree, or beside `mthds_contents` as the runtime's submitted files) and `dependencies`
(address -> tree) run on /v1/execute and a background /start; every refusal is a 4xx naming the member or field, and
the server still serves; the build routes take a tree too."""

from __future__ import annotations

import base64
import io
import struct
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelex_server.engine.method_tree import trees_base_dir
from pipelex_server.runs.model import RunRequest
from tests.api.test_method_trees import CALLER, NOTE, assert_menu_written, main_text, problem_of, tree_of
from tests.support.bundles import METHODS_DIR, SEED_BUNDLE, SEED_TEXT
from tests.support.runs import wait_for_end

GUEST = "Ada, arriving from Lisbon"
GREETING_ADDRESS = "github.com/pipelex-server-tests/greeting/greeting"


def zip_b64(entries: list[tuple[str, bytes]] | dict[str, str], *, compression: int = zipfile.ZIP_DEFLATED) -> str:
    items = [(name, text.encode()) for name, text in entries.items()] if isinstance(entries, dict) else entries
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        warnings.simplefilter("ignore")  # a duplicate name, on purpose
        for name, data in items:
            archive.writestr(name, data)
    return base64.b64encode(buffer.getvalue()).decode()


def zip_with(info: zipfile.ZipInfo, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.mthds", SEED_BUNDLE)
        archive.writestr(info, data)
    return buffer.getvalue()


def welcome_bundle() -> dict[str, str]:
    """The welcome package with the greeting package it calls shipped under `.mthds/methods/greeting/`."""
    vendored = {f".mthds/methods/greeting/{path}": text for path, text in tree_of("greeting_dependency").items()}
    return {**tree_of("welcome_package"), **vendored}


def assert_welcomed(text: str) -> None:
    # the dependency's exported pipe greeted the guest, then the package's own pipe wrote the card from it
    assert text.startswith("STUB: WELCOME write a card from: STUB: GREETING greet the guest:"), text


async def started_run(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    started = await client.post("/v1/start", json=body)
    assert started.status_code == 202, started.text
    return await wait_for_end(client, started.json()["pipeline_run_id"])


# ---------------------------------------------------------------- bundle_b64


async def test_a_bundle_runs_validates_and_starts(client: httpx.AsyncClient, session_app: Any) -> None:
    bundle = zip_b64(tree_of("menu_package"))
    executed = await client.post("/v1/execute", json={"bundle_b64": bundle, "inputs": {"note": NOTE}})
    assert executed.status_code == 200, executed.text
    assert_menu_written(main_text(executed.json()))

    seed = await client.post("/api/v1/pipeline/execute", json={"bundle_b64": bundle, "inputs": {"note": NOTE}})
    assert seed.status_code == 200 and seed.json()["pipeline_state"] == "COMPLETED", seed.text

    verdict = await client.post("/v1/validate", json={"bundle_b64": bundle})
    assert verdict.status_code == 200 and verdict.json()["is_valid"] is True, verdict.text

    run = await started_run(client, {"bundle_b64": bundle, "inputs": {"note": NOTE}})
    assert run["pipeline_state"] == "COMPLETED", run
    row = await session_app.services.runs.repository.get_public(CALLER, run["pipeline_run_id"])
    stored = RunRequest.from_json(row["request"])
    assert stored.tree and "kitchen/menu.mthds" in stored.tree and bundle not in str(row["request"])  # kept as blobs
    assert list(trees_base_dir().iterdir()) == []


async def test_a_bundle_ships_its_dependency_under_vendored_methods(client: httpx.AsyncClient, session_app: Any) -> None:
    bundle = zip_b64(welcome_bundle())
    executed = await client.post("/v1/execute", json={"bundle_b64": bundle, "inputs": {"guest": GUEST}})
    assert executed.status_code == 200, executed.text
    assert_welcomed(main_text(executed.json()))

    run = await started_run(client, {"bundle_b64": bundle, "inputs": {"guest": GUEST}})
    assert run["pipeline_state"] == "COMPLETED", run
    row = await session_app.services.runs.repository.get_public(CALLER, run["pipeline_run_id"])
    stored = RunRequest.from_json(row["request"])
    assert stored.tree_dependencies is not None and set(stored.tree_dependencies) == {GREETING_ADDRESS}
    # a worker elsewhere reads the method and its dependency back from the blobs alone
    tree = await session_app.services.engine.stored_method_tree(stored.tree, scope=CALLER, dependencies=stored.tree_dependencies)
    assert set(tree.dependencies[GREETING_ADDRESS].contents) == {"METHODS.toml", "greet.mthds"}


def _lying_header_zip() -> str:
    """A member whose headers declare 10 bytes where 200 000 are compressed: read bounded, it fails its CRC."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("hello.mthds", SEED_BUNDLE)
        archive.writestr("big.txt", b"a" * 200_000)
    raw = bytearray(buffer.getvalue())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size in local / central header
        position = raw.find(signature, raw.find(b"big.txt") - 60 if signature == b"PK\x03\x04" else 0)
        while position != -1:
            name_length = struct.unpack_from("<H", raw, position + (26 if signature == b"PK\x03\x04" else 28))[0]
            name_at = position + (30 if signature == b"PK\x03\x04" else 46)
            if bytes(raw[name_at : name_at + name_length]) == b"big.txt":
                struct.pack_into("<I", raw, position + offset, 10)
                break
            position = raw.find(signature, position + 4)
    return base64.b64encode(bytes(raw)).decode()


def _symlink_zip() -> str:
    info = zipfile.ZipInfo("link.mthds")
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    return base64.b64encode(zip_with(info, b"/etc/passwd")).decode()


def _encrypted_zip() -> str:
    """A member whose headers flag it encrypted (general purpose bit 0, in its local and central headers)."""
    raw = bytearray(zip_with(zipfile.ZipInfo("secret.mthds"), b"x"))
    for signature, flags_at, name_length_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        position = raw.find(signature)
        while position != -1:
            length = struct.unpack_from("<H", raw, position + name_length_at)[0]
            if bytes(raw[position + name_at : position + name_at + length]) == b"secret.mthds":
                raw[position + flags_at] |= 0x1
            position = raw.find(signature, position + 4)
    return base64.b64encode(bytes(raw)).decode()


BAD_BUNDLES: dict[str, tuple[Any, int, str, dict[str, Any]]] = {
    "not_base64": (lambda: "!!not base64!!", 422, "request.malformed", {"reason": "bad_base64"}),
    "not_zip": (lambda: base64.b64encode(b"plain text").decode(), 422, "request.malformed", {"reason": "bad_zip"}),
    "empty": (lambda: zip_b64({}), 422, "request.invalid", {"field": "bundle_b64"}),
    "too_many_files": (
        lambda: zip_b64({"hello.mthds": SEED_BUNDLE, **{f"notes/{index}.txt": "x" for index in range(128)}}),
        422,
        "method.package_invalid",
        {"reason": "bundle_too_many_files", "limit": 128},
    ),
    "parent_segment": (
        lambda: zip_b64({"hello.mthds": SEED_BUNDLE, "../evil.mthds": SEED_BUNDLE}),
        422,
        "security.input_path_refused",
        {"path": "../evil.mthds"},
    ),
    "absolute": (
        lambda: zip_b64({"hello.mthds": SEED_BUNDLE, "/etc/evil.mthds": "x"}),
        422,
        "security.input_path_refused",
        {"rule": "rooted"},
    ),
    "backslash": (lambda: zip_b64({"hello.mthds": SEED_BUNDLE, "a\\b.mthds": "x"}), 422, "method.package_invalid", {"path": "a\\b.mthds"}),
    "duplicate": (
        lambda: zip_b64([("hello.mthds", SEED_BUNDLE.encode()), ("hello.mthds", SEED_BUNDLE.encode())]),
        422,
        "method.package_invalid",
        {"reason": "duplicate_key", "path": "hello.mthds"},
    ),
    "symlink": (_symlink_zip, 422, "method.package_invalid", {"reason": "symlink_member", "member": "link.mthds"}),
    "encrypted": (_encrypted_zip, 422, "method.package_invalid", {"reason": "encrypted_member", "member": "secret.mthds"}),
    "ratio_bomb": (
        lambda: zip_b64([("hello.mthds", SEED_BUNDLE.encode()), ("zeros.bin", bytes(4 * 1024 * 1024))]),
        422,
        "method.package_invalid",
        {"reason": "compression_ratio", "member": "zeros.bin"},
    ),
    "lying_header": (_lying_header_zip, 422, "method.package_invalid", {"member": "big.txt"}),
    "python": (
        lambda: zip_b64({"hello.mthds": SEED_BUNDLE, "tool.py": "import os\n"}),
        422,
        "pipelex.deployment.custom_code_requires_sandbox",
        {},
    ),
}


@pytest.mark.parametrize("route", ["/v1/execute", "/v1/start", "/v1/validate", "/api/v1/pipeline/start"])
@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
async def test_a_bad_bundle_is_a_4xx_naming_the_member_and_the_server_still_serves(
    client: httpx.AsyncClient, route: str, case: str
) -> None:
    make, status, code, params = BAD_BUNDLES[case]
    body: dict[str, Any] = {"bundle_b64": make()}
    if "validate" not in route:
        body["inputs"] = {"text": SEED_TEXT}
    problem = problem_of(await client.post(route, json=body), status, code)
    assert params.items() <= problem["params"].items(), problem
    assert problem["location"]["path"][:2] == ["body", "bundle_b64"], problem
    healthy = await client.post("/v1/execute", json={"bundle_b64": zip_b64({"hello.mthds": SEED_BUNDLE}), "inputs": {"text": SEED_TEXT}})
    assert healthy.status_code == 200, healthy.text


async def test_bundle_limits_are_settable(make_app: Any) -> None:
    app = await make_app(max_bundle_files=2, max_bundle_total_kib=4)
    three = zip_b64({"hello.mthds": SEED_BUNDLE, "a.txt": "a", "b.txt": "b"})
    problem = problem_of(await app.client.post("/v1/execute", json={"bundle_b64": three}), 422, "method.package_invalid")
    assert problem["params"]["limit"] == 2
    # declared sizes past the decompressed bound are refused before a byte is inflated
    large = zip_b64({"hello.mthds": SEED_BUNDLE, "big.txt": "y" * 5000})
    problem = problem_of(await app.client.post("/v1/execute", json={"bundle_b64": large}), 422, "method.package_invalid")
    assert problem["params"]["reason"] == "bundle_too_large" and problem["params"]["limit"] == 4096
    # an archive past the bound is refused on its encoded length, before decoding
    stored = zip_b64([("hello.mthds", SEED_BUNDLE.encode()), ("noise.bin", uuid.uuid4().bytes * 400)], compression=zipfile.ZIP_STORED)
    problem_of(await app.client.post("/v1/execute", json={"bundle_b64": stored}), 413, "request.too_large")


async def test_files_and_bundle_together_are_refused(client: httpx.AsyncClient) -> None:
    body = {"files": {"hello.mthds": SEED_BUNDLE}, "bundle_b64": zip_b64({"hello.mthds": SEED_BUNDLE}), "inputs": {"text": SEED_TEXT}}
    for route in ("/v1/execute", "/v1/start", "/v1/validate", "/api/v1/pipeline/execute", "/api/v1/validate"):
        sent = {key: value for key, value in body.items() if key != "inputs" or "validate" not in route}
        problem = problem_of(await client.post(route, json=sent), 422, "request.invalid")
        assert problem["params"]["field"] == "bundle_b64"
    both = {"mthds_contents": [SEED_BUNDLE], "bundle_b64": zip_b64({"hello.mthds": SEED_BUNDLE})}
    problem_of(await client.post("/v1/execute", json=both), 422, "request.invalid")


# ---------------------------------------------------------------- resources


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


TEMPLATE = (METHODS_DIR / "report_package" / "templates" / "report.html").read_text()


async def test_resources_join_a_tree_and_reach_a_step(client: httpx.AsyncClient) -> None:
    files = tree_of("report_package")
    del files["templates/report.html"]
    # without the template: the step's file is missing, by name
    problem_of(await client.post("/v1/execute", json={"files": files, "inputs": {"text": SEED_TEXT}}), 422, "method.invalid")
    # with it in `resources`: it joins the tree, and the run goes as far as the runtime goes (no document engine here)
    joined = {"files": files, "resources": {"templates/report.html": b64(TEMPLATE)}, "inputs": {"text": SEED_TEXT}}
    problem_of(await client.post("/v1/execute", json=joined), 501, "pipelex.docgen.engine_unavailable")
    bundled = {"bundle_b64": zip_b64(files), "resources": {"templates/report.html": b64(TEMPLATE)}, "inputs": {"text": SEED_TEXT}}
    problem_of(await client.post("/v1/execute", json=bundled), 501, "pipelex.docgen.engine_unavailable")

    # the same bytes under a path the tree holds change nothing; other bytes there are refused naming `resources`
    menu = tree_of("menu_package")
    same = {"files": menu, "resources": {"README.md": b64(menu["README.md"]), "notes/extra.txt": b64("x")}, "inputs": {"note": NOTE}}
    answer = await client.post("/v1/execute", json=same)
    assert answer.status_code == 200, answer.text
    assert_menu_written(main_text(answer.json()))
    run = await started_run(client, same)
    assert run["pipeline_state"] == "COMPLETED", run
    other = {"files": menu, "resources": {"README.md": b64("other bytes")}, "inputs": {"note": NOTE}}
    problem = problem_of(await client.post("/v1/execute", json=other), 422, "request.invalid")
    assert problem["params"]["field"] == "resources" and problem["params"]["path"] == "README.md"


async def test_resources_beside_inline_bundles_are_the_runtimes_submitted_files(client: httpx.AsyncClient) -> None:
    report = (METHODS_DIR / "report_package" / "report.mthds").read_text()
    bare = {"mthds_contents": [report], "pipe_code": "print_report", "inputs": {"text": SEED_TEXT}}
    refused = await client.post("/v1/execute", json=bare)
    assert refused.status_code == 422, refused.text
    sent = {**bare, "resources": {"templates/report.html": b64(TEMPLATE)}}
    problem_of(await client.post("/v1/execute", json=sent), 501, "pipelex.docgen.engine_unavailable")
    problem_of(await client.post("/api/v1/pipeline/execute", json=sent), 501, "pipelex.docgen.engine_unavailable")
    verdict = await client.post("/v1/validate", json={"mthds_contents": [report], "resources": {"templates/report.html": b64(TEMPLATE)}})
    # found: the validation reaches the document engine (absent here: a 501 or an invalid verdict), not a missing file
    assert "pipelex.docgen.engine_unavailable" in verdict.text and "resource_missing" not in verdict.text, verdict.text
    # a background start's setup check sees them too (no document engine: refused before the run is created)
    problem_of(await client.post("/v1/start", json=sent), 501, "pipelex.docgen.engine_unavailable")


BAD_RESOURCES: dict[str, tuple[dict[str, Any], int, str, dict[str, Any]]] = {
    "parent_segment": ({"../evil.html": b64("x")}, 422, "security.input_path_refused", {"path": "../evil.html"}),
    "absolute": ({"/etc/passwd": b64("x")}, 422, "security.input_path_refused", {"path": "/etc/passwd"}),
    "backslash": ({"a\\b.html": b64("x")}, 422, "request.invalid", {"field": "resources"}),
    "bad_base64": ({"a.html": "!!"}, 422, "request.malformed", {"reason": "bad_base64", "path": "a.html"}),
    "not_a_string": ({"a.html": 3}, 422, "request.invalid", {"path": "a.html"}),
    "two_spellings": ({"a.html": b64("x"), "./a.html": b64("y")}, 422, "request.invalid", {"field": "resources"}),
}


@pytest.mark.parametrize("case", sorted(BAD_RESOURCES))
async def test_bad_resources_are_a_4xx_naming_the_field(client: httpx.AsyncClient, case: str) -> None:
    resources, status, code, params = BAD_RESOURCES[case]
    for body in ({"files": {"hello.mthds": SEED_BUNDLE}}, {"mthds_contents": [SEED_BUNDLE]}):
        problem = problem_of(
            await client.post("/v1/execute", json={**body, "resources": resources, "inputs": {"text": SEED_TEXT}}), status, code
        )
        assert params.items() <= problem["params"].items(), problem
    healthy = await client.post("/v1/execute", json={"files": {"hello.mthds": SEED_BUNDLE}, "inputs": {"text": SEED_TEXT}})
    assert healthy.status_code == 200, healthy.text


async def test_resource_limits_are_settable(make_app: Any) -> None:
    app = await make_app(max_resources_per_request=2, max_resource_file_kib=1, max_resources_total_kib=2)
    body = {"files": {"hello.mthds": SEED_BUNDLE}, "inputs": {"text": SEED_TEXT}}
    three = {f"{index}.txt": b64("x") for index in range(3)}
    problem = problem_of(await app.client.post("/v1/execute", json={**body, "resources": three}), 422, "request.invalid")
    assert problem["params"] == {"field": "resources", "limit": 2}
    big = {"big.txt": b64("x" * 2000)}
    problem = problem_of(await app.client.post("/v1/execute", json={**body, "resources": big}), 413, "request.too_large")
    assert problem["params"]["limit"] == 1024 and problem["params"]["size"] == 2000
    total = {"a.txt": b64("x" * 1000), "b.txt": b64("y" * 1000), "c.txt": b64("z" * 100)}
    app2 = await make_app(max_resources_per_request=5, max_resource_file_kib=1, max_resources_total_kib=2)
    problem = problem_of(await app2.client.post("/v1/execute", json={**body, "resources": total}), 413, "request.too_large")
    assert problem["params"]["limit"] == 2048
    problem_of(await app.client.post("/v1/execute", json={"resources": {"a.txt": b64("x")}, "pipe_code": "x"}), 422, "request.invalid")


# ---------------------------------------------------------------- build routes on a tree


async def test_the_build_routes_take_every_run_source(client: httpx.AsyncClient) -> None:
    menu = tree_of("menu_package")
    sources: list[dict[str, Any]] = [
        {"files": menu},
        {"bundle_b64": zip_b64(menu)},
        {"files": menu, "resources": {"notes/extra.txt": b64("x")}},
    ]
    for source in sources:
        # no pipe_code: the tree's entry pipe (the manifest's main_pipe), qualified by its domain
        inputs = await client.post("/api/v1/build/inputs", json={**source, "format": "json"})
        assert inputs.status_code == 200, inputs.text
        assert inputs.json()["pipe_code"] == "kitchen.write_menu" and set(inputs.json()["inputs_template"]) == {"note"}
        output = await client.post("/api/v1/build/output", json={**source, "format": "schema"})
        assert output.status_code == 200 and output.json()["concept_code"] == "native.Text", output.text
        runner = await client.post("/api/v1/build/runner", json={**source, "target": "http"})
        assert runner.status_code == 200 and "drafting.list_dishes" in runner.json()["python_code"], runner.text
        named = await client.post("/api/v1/build/inputs", json={**source, "pipe_code": "drafting.list_dishes", "format": "json"})
        assert named.status_code == 200 and named.json()["pipe_code"] == "drafting.list_dishes", named.text

    # a package calling a dependency's exported pipe builds too, its dependency shipped in the archive
    welcome = await client.post("/api/v1/build/inputs", json={"bundle_b64": zip_b64(welcome_bundle()), "format": "json"})
    assert welcome.status_code == 200 and welcome.json()["pipe_code"] == "welcome.welcome", welcome.text
    assert list(trees_base_dir().iterdir()) == []


async def test_the_build_routes_refuse_a_bad_source_by_name(client: httpx.AsyncClient) -> None:
    problem = problem_of(
        await client.post("/api/v1/build/inputs", json={"files": {"../x.mthds": SEED_BUNDLE}, "format": "json"}),
        422,
        "security.input_path_refused",
    )
    assert problem["params"]["path"] == "../x.mthds"
    problem_of(await client.post("/api/v1/build/output", json={"bundle_b64": "!!", "format": "schema"}), 422, "request.malformed")
    problem_of(await client.post("/api/v1/build/runner", json={"target": "http"}), 422, "request.invalid")
    both = {"files": {"hello.mthds": SEED_BUNDLE}, "mthds_contents": [SEED_BUNDLE], "format": "json"}
    problem_of(await client.post("/api/v1/build/inputs", json=both), 422, "request.invalid")
    # a tree without an entry pipe names the candidates to choose from
    two = {"a.mthds": SEED_BUNDLE.replace('main_pipe = "summarize"\n', ""), "format": "json"}
    answer = await client.post("/api/v1/build/inputs", json={"files": {"a.mthds": two["a.mthds"]}, "format": "json"})
    assert answer.status_code == 422, answer.text
    healthy = await client.post("/api/v1/build/inputs", json={"files": {"hello.mthds": SEED_BUNDLE}, "format": "json"})
    assert healthy.status_code == 200 and healthy.json()["pipe_code"] == "hello.summarize", healthy.text


# ---------------------------------------------------------------- dependencies


def with_dependency(**extra: Any) -> dict[str, Any]:
    return {"files": tree_of("welcome_package"), "dependencies": {GREETING_ADDRESS: tree_of("greeting_dependency")}, **extra}


async def test_a_dependency_tree_runs_validates_starts_and_builds(client: httpx.AsyncClient, session_app: Any) -> None:
    alone = await client.post("/v1/execute", json={"files": tree_of("welcome_package"), "inputs": {"guest": GUEST}})
    assert alone.status_code == 422, alone.text  # the package it calls is nowhere without it

    executed = await client.post("/v1/execute", json=with_dependency(inputs={"guest": GUEST}))
    assert executed.status_code == 200, executed.text
    assert_welcomed(main_text(executed.json()))
    seed = await client.post("/api/v1/pipeline/execute", json=with_dependency(inputs={"guest": GUEST}))
    assert seed.status_code == 200 and seed.json()["pipeline_state"] == "COMPLETED", seed.text
    verdict = await client.post("/v1/validate", json=with_dependency())
    assert verdict.status_code == 200 and verdict.json()["is_valid"] is True, verdict.text
    built = await client.post("/api/v1/build/inputs", json=with_dependency(format="json"))
    assert built.status_code == 200 and built.json()["pipe_code"] == "welcome.welcome", built.text

    # a background run keeps the dependency tree as blobs (hashes only in the stored request) and reads it back
    run = await started_run(client, with_dependency(inputs={"guest": GUEST}))
    assert run["pipeline_state"] == "COMPLETED", run
    row = await session_app.services.runs.repository.get_public(CALLER, run["pipeline_run_id"])
    stored = RunRequest.from_json(row["request"])
    assert stored.tree_dependencies is not None and set(stored.tree_dependencies[GREETING_ADDRESS]) == {"METHODS.toml", "greet.mthds"}
    assert "GREETING greet" not in str(row["request"])
    assert list(trees_base_dir().iterdir()) == []


BAD_DEPENDENCIES: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "key_mismatch": (
        {"github.com/someone/else/greeting": tree_of("greeting_dependency")},
        "pipelex.request.dependency_key_mismatch",
        {"key": "github.com/someone/else/greeting", "address": GREETING_ADDRESS},
    ),
    "no_manifest": (
        {"github.com/x/y/z": {"greet.mthds": (METHODS_DIR / "greeting_dependency" / "greet.mthds").read_text()}},
        "method.package_invalid",
        {"reason": "manifest_missing", "field": "dependencies"},
    ),
    "bad_path": (
        {GREETING_ADDRESS: {**tree_of("greeting_dependency"), "../x.mthds": "x"}},
        "security.input_path_refused",
        {"field": "dependencies"},
    ),
    "python": (
        {GREETING_ADDRESS: {**tree_of("greeting_dependency"), "tool.py": "import os\n"}},
        "pipelex.deployment.custom_code_requires_sandbox",
        {"field": "dependencies"},
    ),
    "not_an_object": ({GREETING_ADDRESS: ["greet.mthds"]}, "request.invalid", {"field": "dependencies"}),
}


@pytest.mark.parametrize("case", sorted(BAD_DEPENDENCIES))
async def test_a_bad_dependency_is_a_4xx_naming_the_field(client: httpx.AsyncClient, case: str) -> None:
    dependencies, code, params = BAD_DEPENDENCIES[case]
    body = {"files": tree_of("welcome_package"), "dependencies": dependencies, "inputs": {"guest": GUEST}}
    for route in ("/v1/execute", "/v1/start", "/api/v1/pipeline/start"):
        problem = problem_of(await client.post(route, json=body), 422, code)
        assert params.items() <= problem["params"].items(), problem
    healthy = await client.post("/v1/execute", json=with_dependency(inputs={"guest": GUEST}))
    assert healthy.status_code == 200, healthy.text


async def test_dependencies_need_files_and_are_held_to_the_request_limits(client: httpx.AsyncClient, make_app: Any) -> None:
    lone = {"mthds_contents": [SEED_BUNDLE], "dependencies": {GREETING_ADDRESS: tree_of("greeting_dependency")}}
    problem = problem_of(await client.post("/v1/execute", json=lone), 422, "request.invalid")
    assert problem["params"]["field"] == "dependencies"

    app = await make_app(max_method_dependencies=1, max_method_request_total_kib=2)
    two = with_dependency(inputs={"guest": GUEST})
    two["dependencies"]["github.com/x/y/other"] = {**tree_of("greeting_dependency")}
    problem = problem_of(await app.client.post("/v1/execute", json=two), 422, "method.package_invalid")
    assert problem["params"]["reason"] == "too_many_dependencies" and problem["params"]["limit"] == 1
    heavy = with_dependency(inputs={"guest": GUEST})
    heavy["dependencies"][GREETING_ADDRESS]["notes.txt"] = "n" * 2000
    problem = problem_of(await app.client.post("/v1/execute", json=heavy), 422, "method.package_invalid")
    assert problem["params"]["reason"] == "request_too_large" and problem["params"]["limit"] == 2048


async def test_a_refusal_inside_a_nested_tree_names_the_file_as_the_request_does(client: httpx.AsyncClient) -> None:
    greeting = tree_of("greeting_dependency")
    body = {"files": tree_of("welcome_package"), "dependencies": {GREETING_ADDRESS: {**greeting, "tools/x.py": "import os\n"}}}
    problem = problem_of(
        await client.post("/v1/execute", json={**body, "inputs": {"guest": GUEST}}), 422, "pipelex.deployment.custom_code_requires_sandbox"
    )
    assert problem["params"]["path"] == f"{GREETING_ADDRESS}/tools/x.py"
    assert problem["location"]["path"] == ["body", "dependencies", f"{GREETING_ADDRESS}/tools/x.py"]

    shipped = {**welcome_bundle(), ".mthds/methods/greeting/Notes.md": "a", ".mthds/methods/greeting/notes.md": "b"}
    problem = problem_of(
        await client.post("/v1/execute", json={"bundle_b64": zip_b64(shipped), "inputs": {"guest": GUEST}}), 422, "method.package_invalid"
    )
    assert problem["params"]["reason"] == "path_collision" and problem["params"]["path"].startswith(".mthds/methods/greeting/"), problem
    assert problem["location"]["path"][:2] == ["body", "bundle_b64"]

    unpackaged = {**tree_of("welcome_package"), ".mthds/methods/loose/greet.mthds": "x"}
    problem = problem_of(
        await client.post("/v1/execute", json={"bundle_b64": zip_b64(unpackaged), "inputs": {"guest": GUEST}}),
        422,
        "method.package_invalid",
    )
    assert problem["params"]["reason"] == "manifest_missing" and problem["params"]["path"] == ".mthds/methods/loose/METHODS.toml"


# ---------------------------------------------------------------- Temporal mode: a worker with no shared disk


@pytest.mark.slow
@pytest.mark.temporal
async def test_dependencies_and_an_archive_run_on_a_temporal_worker_that_shares_no_disk(
    stub: Any, postgres_url: str, s3_server: Any, tmp_path: Path
) -> None:
    from tests.support.temporal import no_shared_disk

    async with no_shared_disk(
        tmp_path, s3_server=s3_server, postgres_url=postgres_url, bucket_prefix="deps", env={"OPENAI_BASE_URL": stub.base_url}
    ) as (api, worker):
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
            for body in (
                with_dependency(inputs={"guest": GUEST}),
                {"bundle_b64": zip_b64(welcome_bundle()), "inputs": {"guest": GUEST}},
            ):
                started = await http.post("/api/v1/pipeline/start", json=body)
                assert started.status_code == 202, started.text
                run = await wait_for_end(http, started.json()["pipeline_run_id"])
                assert run["pipeline_state"] == "COMPLETED", (run, worker.log()[-3000:])
                assert_welcomed(main_text(run))
