"""The loaded-library cache for method trees (`files`, `bundle_b64`, `method_ref`): a tree that reads nothing beyond its
bundles is loaded once and its runs each get their own output; a tree with a template, Python or a dependency is
always loaded whole; a `/start` of a tree checks and runs from one load."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipelex_server.engine.library_cache import LibraryCache
from pipelex_server.engine.method_tree_files import MethodTreeFiles
from tests.support.bundles import package_files
from tests.support.runs import wait_for_end


def _tree(name: str) -> MethodTreeFiles:
    return MethodTreeFiles.of({path: text.encode() for path, text in package_files(name).items()})


async def _run_tree(engine: Any, tree: MethodTreeFiles, name: str) -> Any:
    return await engine.execute(
        pipe_code=None,
        mthds_contents=None,
        inputs={"name": name},
        output_name=None,
        output_multiplicity=None,
        dynamic_output_concept_ref=None,
        dry_run=False,
        scope="cache-tests",
        storage_scope="cache-tests/runs/r",
        request_id=None,
        tree=tree,
    )


def _main_text(outcome: Any) -> str:
    return outcome.pipe_output["working_memory"]["root"][outcome.main_stuff_name]["content"]["text"]


@pytest.fixture
async def app(make_app):
    return await make_app()


async def test_concurrent_runs_of_a_cached_tree_each_get_their_own_output(app):
    engine = app.services.engine
    cache = engine.execution.libraries
    tree = _tree("greeting_package")  # two domains, a METHODS.toml and a README no bundle names
    first = await _run_tree(engine, tree, "TOKEN-first")
    assert len(cache) == 1 and cache.misses == 1
    outcomes = await asyncio.gather(*(_run_tree(engine, tree, f"TOKEN-in{index}") for index in range(50)))
    assert cache.hits == 50
    for index, outcome in enumerate(outcomes):
        # the sequence's second step polishes the first step's draft: the guest's token reaches the end
        assert _main_text(outcome).endswith(f"[TOKEN-in{index}]")
        assert outcome.crate_fingerprint == first.crate_fingerprint and outcome.main_stuff_name == first.main_stuff_name


def test_trees_whose_runs_read_files_or_dependencies_are_not_cached():
    cache = LibraryCache(max_entries=8, max_mib=1)
    assert cache.tree_key(_tree("greeting_package"), pipe_code=None) is not None
    assert cache.tree_key(_tree("report_package"), pipe_code=None) is None  # a step reads templates/report.html
    assert cache.tree_key(_tree("welcome_package"), pipe_code=None) is None  # calls a dependency package (->)
    with_python = MethodTreeFiles.of({**_tree("greeting_package").contents, "helpers.py": b"x = 1\n"})
    assert cache.tree_key(with_python, pipe_code=None) is None
    # the key is the tree's digest: a changed file is another entry
    changed = dict(_tree("greeting_package").contents)
    changed["greeting.mthds"] = changed["greeting.mthds"].replace(b"short greeting", b"warm greeting")
    assert cache.tree_key(MethodTreeFiles.of(changed), pipe_code=None) != cache.tree_key(_tree("greeting_package"), pipe_code=None)


async def test_a_start_of_a_tree_checks_and_runs_from_one_load(app):
    cache = app.services.engine.execution.libraries
    body = {"files": package_files("greeting_package"), "inputs": {"name": "TOKEN-started"}}
    response = await app.client.post("/api/v1/pipeline/start", json=body)
    assert response.status_code == 202, response.text
    run = await wait_for_end(app.client, response.json()["pipeline_run_id"])
    assert run["pipeline_state"] == "COMPLETED"
    assert (cache.misses, cache.hits, len(cache)) == (1, 1, 1)  # the check loaded the tree; the run loaded its crate
