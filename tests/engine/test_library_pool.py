"""The pool of loaded libraries (engine/library_pool.py) with the real runtime and the stub LLM: a method's next run
reuses the library of its last successful run, concurrent runs never share one, a failed run's library is torn down,
the pool stays within its bounds, and a library torn down behind its back is never lent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipelex_server.engine.library_pool import PER_KEY
from pipelex_server.errors import ApiProblem
from tests.support.bundles import SEED_BUNDLE, unique_bundle


async def _run(engine: Any, bundle: str, inputs: dict[str, Any]) -> Any:
    return await engine.execute(
        pipe_code=None,
        mthds_contents=[bundle],
        inputs=inputs,
        output_name=None,
        output_multiplicity=None,
        dynamic_output_concept_ref=None,
        dry_run=False,
        scope="pool-tests",
        storage_scope="pool-tests/runs/r",
        request_id=None,
    )


def _text(outcome: Any) -> str:
    return outcome.pipe_output["working_memory"]["root"][outcome.main_stuff_name]["content"]["text"]


def _held() -> dict[str, Any]:
    from pipelex.interpreter_hub import get_library_manager

    return get_library_manager()._libraries  # type: ignore[attr-defined]


async def test_a_methods_next_run_reuses_the_library_of_its_last_successful_run(make_app):
    engine = (await make_app()).services.engine
    cache = engine.execution.libraries
    bundle = SEED_BUNDLE.replace("Summarize in one sentence", "Summarize TOKEN-pool-a")
    await _run(engine, bundle, {"text": "first"})  # a miss: a full load, nothing lent
    assert len(cache.pool) == 0
    await _run(engine, bundle, {"text": "second"})  # a hit: loaded from the crate, kept afterwards
    assert len(cache.pool) == 1
    kept = next(iter(cache.pool._idle))
    for index in range(5):
        outcome = await _run(engine, bundle, {"text": f"TOKEN-seq{index}"})
        assert _text(outcome).endswith(f" TOKEN-seq{index}]")  # each run answers its own input
    assert cache.pool.reused == 5
    assert list(cache.pool._idle) == [kept]  # the same library, lent five times in a row


async def test_concurrent_runs_never_share_a_library_and_the_pool_stays_bounded(make_app):
    engine = (await make_app(library_pool_size=6)).services.engine
    cache = engine.execution.libraries
    for index in range(3):
        await _run(engine, unique_bundle(index), {"text": "first"})
    lent: list[str] = []
    original_take = cache.pool.take

    def take(key: str) -> str | None:
        library_id = original_take(key)
        if library_id is not None:
            assert library_id not in lent, "a library lent to two runs at once"
            lent.append(library_id)
        return library_id

    cache.pool.take = take  # type: ignore[method-assign]
    for _wave in range(3):
        runs = [(index % 3, index) for index in range(60)]
        outcomes = await asyncio.gather(*(_run(engine, unique_bundle(m), {"text": f"TOKEN-in{r}"}) for m, r in runs))
        for (method, run), outcome in zip(runs, outcomes, strict=True):
            content = outcome.pipe_output["working_memory"]["root"][outcome.main_stuff_name]["content"]
            assert content["value"] == f"stub-value-TOKEN-r{method}-TOKEN-in{run}"
        lent.clear()  # between waves a library may be lent again
    idle = cache.pool._idle
    assert 0 < len(idle) <= 6
    assert max(sum(1 for key in idle.values() if key == k) for k in set(idle.values())) <= PER_KEY
    assert set(idle) <= set(_held())  # every idle library is still loaded
    assert cache.pool.reused > 0


async def test_a_failed_runs_library_is_torn_down_not_kept(make_app):
    engine = (await make_app()).services.engine
    cache = engine.execution.libraries
    bundle = SEED_BUNDLE.replace("Summarize in one sentence", "Summarize TOKEN-pool-f")
    await _run(engine, bundle, {"text": "x"})
    await _run(engine, bundle, {"text": "x"})
    (kept,) = list(cache.pool._idle)
    with pytest.raises(ApiProblem) as missing:  # takes the kept library, then fails at the input check
        await _run(engine, bundle, {})
    assert missing.value.code == "input.missing"
    assert len(cache.pool) == 0 and kept not in _held()
    assert _text(await _run(engine, bundle, {"text": "TOKEN-after"})).endswith(" TOKEN-after]")


async def test_a_library_torn_down_behind_the_pools_back_is_never_lent(make_app):
    engine = (await make_app()).services.engine
    cache = engine.execution.libraries
    bundle = SEED_BUNDLE.replace("Summarize in one sentence", "Summarize TOKEN-pool-g")
    await _run(engine, bundle, {"text": "x"})
    await _run(engine, bundle, {"text": "x"})
    (kept,) = list(cache.pool._idle)
    from pipelex.interpreter_hub import get_library_manager

    get_library_manager().teardown(library_id=kept)  # as the runtime's teardown of every library at shutdown would
    assert kept not in _held()
    assert _text(await _run(engine, bundle, {"text": "TOKEN-fresh"})).endswith(" TOKEN-fresh]")
    assert cache.pool.reused == 0


async def test_a_pool_of_size_zero_keeps_nothing(make_app):
    engine = (await make_app(library_pool_size=0)).services.engine
    cache = engine.execution.libraries
    for _ in range(3):
        await _run(engine, SEED_BUNDLE, {"text": "x"})
    assert cache.hits == 2 and len(cache.pool) == 0 and cache.pool.reused == 0
