"""The loaded-library cache (engine/library_cache.py) with the real runtime and the stub LLM: concurrent runs of one
method and of many methods each get their own output, entries are evicted by count and by bytes, and a changed method
is never answered from an older entry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipelex_server.engine.caches import MIB
from pipelex_server.errors import ApiProblem
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, unique_bundle


async def _run(engine: Any, bundle: str, text: str, *, pipe_code: str | None = None) -> Any:
    return await engine.execute(
        pipe_code=pipe_code,
        mthds_contents=[bundle],
        inputs={"text": text},
        output_name=None,
        output_multiplicity=None,
        dynamic_output_concept_ref=None,
        dry_run=False,
        scope="cache-tests",
        storage_scope="cache-tests/runs/r",
        request_id=None,
    )


def _main_content(outcome: Any) -> Any:
    return outcome.pipe_output["working_memory"]["root"][outcome.main_stuff_name]["content"]


def _open_libraries(engine: Any) -> int:
    """Libraries the runtime holds beyond the idle ones the pool keeps for later runs (engine/library_pool.py)."""
    from pipelex.interpreter_hub import get_library_manager

    from pipelex_server.engine.library_pool import idle_library_ids

    held = get_library_manager()._libraries  # type: ignore[attr-defined]
    assert all(library_id in held for library_id in engine.execution.libraries.pool._idle)
    return len(set(held) - idle_library_ids())  # idle in this app's pool or in a pool of an earlier app


@pytest.fixture
async def engine(make_app):
    handle = await make_app()
    return handle.services.engine


async def test_200_concurrent_runs_of_one_cached_method_each_get_their_own_output(engine):
    cache = engine.execution.libraries
    first = await _run(engine, SEED_BUNDLE, f"TOKEN-warm {SEED_TEXT}")
    assert len(cache) == 1 and cache.misses == 1
    outcomes = await asyncio.gather(*(_run(engine, SEED_BUNDLE, f"TOKEN-in{index} {SEED_TEXT}") for index in range(200)))
    assert cache.hits == 200 and len(cache) == 1
    for index, outcome in enumerate(outcomes):
        # the stub echoes the TOKEN-... of its prompt: each run answered its own input
        assert _main_content(outcome)["text"].endswith(f"[TOKEN-in{index}]")
        assert outcome.crate_fingerprint == first.crate_fingerprint  # the same method, loaded from the same crate
    assert _open_libraries(engine) == 0  # every run's library was torn down or kept idle by the pool


async def test_200_concurrent_runs_of_50_cached_methods_each_get_their_own_output(engine):
    cache = engine.execution.libraries
    # 50 methods that all define a concept `Result` with a structure, each in its own domain: a first run of each
    await asyncio.gather(*(_run(engine, unique_bundle(index), "first") for index in range(50)))
    assert len(cache) == 50
    runs = [(index % 50, index) for index in range(200)]
    outcomes = await asyncio.gather(*(_run(engine, unique_bundle(method), f"TOKEN-in{run}") for method, run in runs))
    assert cache.hits == 200
    for (method, run), outcome in zip(runs, outcomes, strict=True):
        content = _main_content(outcome)
        # a structured output of method `method` (its own concept), for run `run` (its own input)
        assert content["value"] == f"stub-value-TOKEN-r{method}-TOKEN-in{run}"
    assert _open_libraries(engine) == 0


async def test_a_changed_method_is_never_answered_from_the_entry_of_the_old_one(engine):
    cache = engine.execution.libraries
    before = SEED_BUNDLE.replace("Summarize in one sentence", "Summarize TOKEN-v1")
    after = SEED_BUNDLE.replace("Summarize in one sentence", "Summarize TOKEN-v2")
    assert _main_content(await _run(engine, before, "x"))["text"].endswith("[TOKEN-v1]")
    assert _main_content(await _run(engine, before, "x"))["text"].endswith("[TOKEN-v1]")  # a hit
    assert cache.hits == 1
    assert _main_content(await _run(engine, after, "x"))["text"].endswith("[TOKEN-v2]")  # same pipe, new text: a miss
    assert cache.hits == 1 and len(cache) == 2


async def test_a_cached_method_still_refuses_what_a_full_load_refuses(engine):
    await _run(engine, SEED_BUNDLE, "x")
    with pytest.raises(ApiProblem) as missing:  # a hit: the inputs are still checked
        await engine.execute(
            pipe_code=None,
            mthds_contents=[SEED_BUNDLE],
            inputs={},
            output_name=None,
            output_multiplicity=None,
            dynamic_output_concept_ref=None,
            dry_run=False,
            scope="cache-tests",
            storage_scope="cache-tests/runs/r",
            request_id=None,
        )
    assert missing.value.code == "input.missing"
    with pytest.raises(ApiProblem) as unknown:  # another entry pipe is another key: a full load refuses it
        await _run(engine, SEED_BUNDLE, "x", pipe_code="nope")
    assert unknown.value.code == "request.pipe_not_found"
    assert _open_libraries(engine) == 0


async def test_entries_are_evicted_least_recently_used_by_count(make_app):
    engine = (await make_app(library_cache_size=2)).services.engine
    cache = engine.execution.libraries
    for index in (0, 1, 0, 2):  # 0 is touched again, so 1 is the least recently used when 2 arrives
        await _run(engine, unique_bundle(index), "x")
    assert len(cache) == 2
    hits = cache.hits
    await _run(engine, unique_bundle(0), "x")
    await _run(engine, unique_bundle(2), "x")
    assert cache.hits == hits + 2
    await _run(engine, unique_bundle(1), "x")  # evicted: loaded again
    assert cache.hits == hits + 2


async def test_entries_are_bounded_by_bytes(make_app):
    probe = (await make_app()).services.engine
    await _run(probe, unique_bundle(0), "x")
    size = probe.execution.libraries.bytes
    engine = (await make_app(library_cache_max_mib=(2.5 * size) / MIB)).services.engine
    cache = engine.execution.libraries
    for index in range(4):  # the bundles differ only in their index: their crates are about the same size
        await _run(engine, unique_bundle(index), "x")
    assert len(cache) == 2 and cache.bytes <= 2.5 * size
    tiny = (await make_app(library_cache_max_mib=100 / MIB)).services.engine  # smaller than any crate
    await _run(tiny, unique_bundle(0), "x")
    assert len(tiny.execution.libraries) == 0


async def test_method_trees_and_output_overrides_are_not_cached(engine):
    cache = engine.execution.libraries
    await engine.execute(
        pipe_code="summarize",
        mthds_contents=[SEED_BUNDLE],
        inputs={"text": "x"},
        output_name="summary",
        output_multiplicity=None,
        dynamic_output_concept_ref=None,
        dry_run=False,
        scope="cache-tests",
        storage_scope="cache-tests/runs/r",
        request_id=None,
    )
    assert len(cache) == 0 and cache.misses == 0


def test_a_bundle_calling_a_dependency_package_is_not_cached():
    from pipelex_server.engine.library_cache import LibraryCache

    cache = LibraryCache(max_entries=8, max_mib=1)
    assert cache.key(mthds_contents=[SEED_BUNDLE], pipe_code=None, plain=True) is not None
    calling = SEED_BUNDLE.replace('output = "Text"', 'output = "dep->Summary"')
    assert cache.key(mthds_contents=[calling], pipe_code=None, plain=True) is None
    assert cache.key(mthds_contents=[SEED_BUNDLE], pipe_code=None, plain=False) is None
    assert LibraryCache(max_entries=0, max_mib=1).key(mthds_contents=[SEED_BUNDLE], pipe_code=None, plain=True) is None


async def test_an_entry_that_fails_to_load_falls_back_to_a_full_load(engine):
    from pipelex_server.engine.library_cache import CachedLibrary

    cache = engine.execution.libraries
    bundle = SEED_BUNDLE.replace("Summarize in one sentence", "Summarize TOKEN-fallback")
    await _run(engine, bundle, "x")
    key = cache.key(mthds_contents=[bundle], pipe_code=None, plain=True)
    cache.pool.clear()  # no library kept from the first run: the next one opens the (broken) entry
    cache._entries.put(key, CachedLibrary(crate_json="{not a crate", entry_ref="hello.summarize"), 20)
    outcome = await _run(engine, bundle, "x")
    assert _main_content(outcome)["text"].endswith("[TOKEN-fallback]")
    assert _open_libraries(engine) == 0
