"""`method_ref` with the packages a fetched package ships under `.mthds/methods/<name>/`: each is a dependency tree of the
run, under the request limits and the tree refusals, named by its path in the package; and the crate routes
(`/v1/resolve`, `/v1/pipe-io`, `/v1/codegen`) take a `method_ref` as the run routes do. A local bare repository stands
for GitHub (tests/support/gitrepo.py): no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelex_server.engine.method_tree_files import MethodTreeFiles
from pipelex_server.runs.model import RunRequest
from tests.api.test_method_ref import main_text, problem_of
from tests.support.bundles import package_files
from tests.support.gitrepo import ADDRESS, MenuRepository, served_menu_repository
from tests.support.runs import wait_for_end

GUEST = "Ada, arriving from Lisbon"
GREETING_ADDRESS = "github.com/pipelex-server-tests/greeting/greeting"  # what greeting_dependency's manifest declares
GREETING = package_files("greeting_dependency")
SHIPPED = ".mthds/methods/greeting/"
CODEGEN = {"kind": "types", "target": "ts-zod"}


def welcome_tree() -> dict[str, str]:
    """The welcome package (it calls `greeting->greeting.greet`), published at the repository's address."""
    welcome = package_files("welcome_package")
    manifest = welcome["METHODS.toml"].replace('"github.com/pipelex-server-tests/welcome-package"', f'"{ADDRESS}"')
    assert manifest != welcome["METHODS.toml"]
    return {**welcome, "METHODS.toml": manifest}


def shipped(name: str, files: dict[str, str]) -> dict[str, str]:
    return {f".mthds/methods/{name}/{path}": text for path, text in files.items()}


def publish(repo: MenuRepository, tag: str, files: dict[str, str], *, symlinks: dict[str, str] | None = None) -> str:
    """Commit exactly ``files`` (and ``symlinks``) as the repository's tree, tagged ``tag``; the method_ref naming it."""
    work = repo.root / "work"
    for path in sorted(work.rglob("*"), key=lambda path: -len(path.parts)):
        if ".git" in path.relative_to(work).parts:
            continue
        if path.is_symlink() or path.is_file():
            if path.relative_to(work).as_posix() not in files:
                path.unlink()
        elif not any(path.iterdir()):
            path.rmdir()
    for link in symlinks or {}:
        (work / link).parent.mkdir(parents=True, exist_ok=True)
    repo.tag(tag, dict(files), symlinks=symlinks)
    return f"{ADDRESS}@{tag}"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MenuRepository:
    return served_menu_repository(tmp_path / "repo", monkeypatch)


@pytest.fixture
async def app(make_app: Any, tmp_path: Path, repo: MenuRepository) -> Any:
    return await make_app(method_cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- runs


async def test_a_shipped_package_is_a_dependency_of_the_run(app: Any, repo: MenuRepository) -> None:
    ref = publish(repo, "w1.0.0", {**welcome_tree(), **shipped("greeting", GREETING)})
    executed = await app.client.post("/v1/execute", json={"method_ref": ref, "inputs": {"guest": GUEST}})
    assert executed.status_code == 200, executed.text
    # the shipped package's exported pipe greeted the guest, then the package's own pipe wrote the card from it
    assert main_text(executed.json()).startswith("STUB: WELCOME write a card from: STUB: GREETING greet the guest:"), executed.text
    provenance = executed.json()["method_provenance"]
    assert provenance["commit_sha"] == repo.commits["w1.0.0"]
    # the package's own tree, as the official server records it: the commit pins the shipped packages
    own = MethodTreeFiles.of({path: text.encode() for path, text in welcome_tree().items()})
    assert provenance["tree_digest"] == own.digest

    verdict = await app.client.post("/v1/validate", json={"method_ref": ref})
    assert verdict.status_code == 200 and verdict.json()["is_valid"] is True, verdict.text

    started = await app.client.post("/v1/start", json={"method_ref": ref, "inputs": {"guest": GUEST}})
    assert started.status_code == 202, started.text
    run = await wait_for_end(app.client, started.json()["pipeline_run_id"])
    assert run["pipeline_state"] == "COMPLETED", run
    row = await app.services.runs.repository.get_public("shared", run["pipeline_run_id"])
    stored = RunRequest.from_json(row["request"])
    assert stored.tree_dependencies is not None and set(stored.tree_dependencies[GREETING_ADDRESS]) == set(GREETING)
    assert stored.method_provenance == provenance
    assert repo.fetches() == 1


# ---------------------------------------------------------------- refusals, each naming the file by its path in the package


def _collision() -> dict[str, str]:
    return {**welcome_tree(), **shipped("greeting", GREETING), **shipped("greeting-copy", GREETING)}


REFUSED: dict[str, tuple[dict[str, str], str, dict[str, Any]]] = {
    "manifest-missing": (
        {**welcome_tree(), **shipped("greeting", {"greet.mthds": GREETING["greet.mthds"]})},
        "method.package_invalid",
        {"reason": "manifest_missing", "path": f"{SHIPPED}METHODS.toml"},
    ),
    "manifest-invalid": (
        {**welcome_tree(), **shipped("greeting", {**GREETING, "METHODS.toml": "[package\n"})},
        "method.package_invalid",
        {"reason": "manifest_invalid", "path": f"{SHIPPED}METHODS.toml"},
    ),
    "address-collision": (
        _collision(),
        "method.package_invalid",
        {"reason": "dependency_address_collision", "path": ".mthds/methods/greeting-copy/"},
    ),
    "python": (
        {**welcome_tree(), **shipped("greeting", {**GREETING, "tools/helper.py": "import os\n"})},
        "pipelex.deployment.custom_code_requires_sandbox",
        {"origin": "package", "path": f"{SHIPPED}tools/helper.py"},
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_bad_shipped_package_is_refused_naming_its_file(app: Any, repo: MenuRepository, case: str) -> None:
    files, code, params = REFUSED[case]
    ref = publish(repo, f"bad-{case}", files)
    response = await app.client.post("/v1/execute", json={"method_ref": ref, "inputs": {"guest": GUEST}})
    problem = problem_of(response, 422, code)
    assert params.items() <= problem["params"].items(), problem
    assert problem["location"]["path"] == ["body", "method_ref", params["path"]], problem


async def test_a_symbolic_link_in_a_shipped_package_or_as_one_is_refused(app: Any, repo: MenuRepository) -> None:
    ref = publish(repo, "link-in", {**welcome_tree(), **shipped("greeting", GREETING)}, symlinks={f"{SHIPPED}linked.mthds": "greet.mthds"})
    problem = problem_of(await app.client.post("/v1/validate", json={"method_ref": ref}), 422, "method.package_invalid")
    assert (problem["params"]["reason"], problem["params"]["path"]) == ("symlink", f"{SHIPPED}linked.mthds"), problem
    # a package folder that is a link would be read from wherever it points
    ref = publish(repo, "link-as", welcome_tree(), symlinks={".mthds/methods/greeting": "/etc"})
    problem = problem_of(await app.client.post("/v1/validate", json={"method_ref": ref}), 422, "method.package_invalid")
    assert (problem["params"]["reason"], problem["params"]["path"]) == ("symlink", ".mthds/methods/greeting"), problem


async def test_shipped_packages_are_held_to_the_request_limits(make_app: Any, tmp_path: Path, repo: MenuRepository) -> None:
    app = await make_app(method_cache_dir=tmp_path / "cache", max_method_dependencies=1, max_method_request_total_kib=2)
    other = {**GREETING, "METHODS.toml": GREETING["METHODS.toml"].replace('name = "greeting"', 'name = "other"')}
    two = publish(repo, "two", {**welcome_tree(), **shipped("greeting", GREETING), **shipped("other", other)})
    problem = problem_of(await app.client.post("/v1/validate", json={"method_ref": two}), 422, "method.package_invalid")
    assert (problem["params"]["reason"], problem["params"]["limit"]) == ("too_many_dependencies", 1), problem

    heavy = publish(repo, "heavy", {**welcome_tree(), **shipped("greeting", {**GREETING, "notes.txt": "n" * 3000})})
    problem = problem_of(await app.client.post("/v1/validate", json={"method_ref": heavy}), 422, "method.package_invalid")
    assert (problem["params"]["reason"], problem["params"]["limit"]) == ("request_too_large", 2048), problem

    # what is under .mthds/methods/ but no package folder is not read: a file there, a dot folder
    stray = publish(
        repo, "stray", {**welcome_tree(), **shipped("greeting", GREETING), ".mthds/methods/notes.md": "x", **shipped(".old", other)}
    )
    response = await app.client.post("/v1/execute", json={"method_ref": stray, "inputs": {"guest": GUEST}})
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- the crate routes


async def test_the_crate_routes_answer_a_method_ref_as_they_answer_its_tree(app: Any, repo: MenuRepository) -> None:
    ref = publish(repo, "w1.0.0", {**welcome_tree(), **shipped("greeting", GREETING)})
    sent = {"files": welcome_tree(), "dependencies": {GREETING_ADDRESS: GREETING}}
    for route, extra in (("/v1/resolve", {}), ("/v1/pipe-io", {"include_files": True}), ("/v1/codegen", CODEGEN)):
        fetched = await app.client.post(route, json={"method_ref": ref, **extra})
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["is_valid"] is True, fetched.json()
        assert fetched.json() == (await app.client.post(route, json={**sent, **extra})).json(), route
    described = (await app.client.post("/v1/pipe-io", json={"method_ref": ref})).json()
    assert described["pipe_ref"] == "welcome.welcome", described
    assert repo.fetches() == 1  # one commit, whatever the route


@pytest.mark.parametrize(
    "beside",
    [
        {"files": {"a.mthds": "x"}},
        {"bundle_b64": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="},
        {"mthds_contents": ["x"]},
        {"dependencies": {GREETING_ADDRESS: GREETING}},
        {"resources": {"a.txt": "eA=="}},
    ],
    ids=["files", "bundle_b64", "mthds_contents", "dependencies", "resources"],
)
async def test_a_crate_route_refuses_method_ref_beside_another_source(app: Any, repo: MenuRepository, beside: dict[str, Any]) -> None:
    for route, extra in (("/v1/resolve", {}), ("/v1/pipe-io", {}), ("/v1/codegen", CODEGEN)):
        response = await app.client.post(route, json={"method_ref": f"{ADDRESS}@v1.0.0", **beside, **extra})
        assert problem_of(response, 422, "request.invalid")["params"]["field"] == "method_ref", route
    assert repo.fetches() == 0


async def test_a_crate_route_answers_the_fetch_refusals(app: Any, repo: MenuRepository) -> None:
    problem_of(await app.client.post("/v1/resolve", json={"method_ref": f"{ADDRESS}@v9.9.9"}), 404, "method.not_found")
    problem_of(await app.client.post("/v1/pipe-io", json={"method_ref": "gitlab.com/a/b"}), 422, "request.unsupported")
