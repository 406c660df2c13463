"""The two runtime caches under their byte budgets, with the real runtime: validate verdicts and compiled templates."""

from __future__ import annotations

import hashlib

import pytest

from pipelex_server.engine.caches import MIB
from pipelex_server.engine.templates import TEMPLATE_CACHE_MAX_ENTRIES, TEMPLATES, estimated_template_bytes
from pipelex_server.engine.validation import verdict_bytes
from tests.support.bundles import SEED_BUNDLE

VALIDATE = "/api/v1/validate"


def _bundle(index: int) -> dict[str, list[str]]:
    return {"mthds_contents": [SEED_BUNDLE + f"\n# probe {index}\n"]}


async def test_verdicts_are_evicted_least_recently_used_to_stay_within_validate_cache_max_mib(make_app):
    probe = await make_app()
    assert (await probe.client.post(VALIDATE, json=_bundle(0))).status_code == 200
    # every probe's verdict has this size: the bundles differ only in one digit of a comment
    size = verdict_bytes(probe.services.engine.validator.verdicts.get(_key(0)))
    handle = await make_app(validate_cache_max_mib=(2.5 * size) / MIB)
    engine, http = handle.services.engine, handle.client
    for index in range(3):
        assert (await http.post(VALIDATE, json=_bundle(index))).status_code == 200
    # the cache counts exactly the verdicts it holds (their sizes may differ by a byte or two: a verdict can carry timings)
    held = [engine.validator.verdicts.get(_key(index)) for index in range(3)]
    assert len(engine.validator.verdicts) == 2 and held[0] is None
    assert engine.validator.verdicts.bytes == sum(verdict_bytes(verdict) for verdict in held if verdict is not None)
    assert engine.validator.verdicts.bytes <= engine.validator.verdicts.max_bytes
    # bundle 0 went first; touching 1 makes 2 the least recent, so bundle 3 evicts 2
    await http.post(VALIDATE, json=_bundle(1))
    await http.post(VALIDATE, json=_bundle(3))
    kept = {index for index in range(4) if engine.validator.verdicts.get(_key(index)) is not None}
    assert kept == {1, 3}


async def test_a_verdict_larger_than_the_whole_budget_is_not_cached(make_app):
    handle = await make_app(validate_cache_max_mib=100 / MIB)  # 100 bytes: smaller than any verdict
    verdict = (await handle.client.post(VALIDATE, json=_bundle(10))).json()
    assert verdict["success"] is True and len(str(verdict)) > 100
    assert len(handle.services.engine.validator.verdicts) == 0


def _key(index: int) -> str:
    """The verdict cache's key for probe bundle ``index`` (as Engine.validate computes it)."""
    return hashlib.sha256(repr((_bundle(index)["mthds_contents"], None)).encode()).hexdigest()


@pytest.fixture
def small_template_budget(session_app):
    """Shrink the process's template cache for one test, then give it back its budget."""
    saved = TEMPLATES.max_bytes
    TEMPLATES.clear()
    yield
    TEMPLATES.resize(max_bytes=saved, max_entries=TEMPLATE_CACHE_MAX_ENTRIES)


async def test_compiled_templates_are_reused_and_evicted_by_estimated_bytes(small_template_budget, session_app):
    from pipelex.tools.jinja2 import jinja2_rendering
    from pipelex.tools.jinja2.template_category import TemplateCategory
    from pipelex.tools.jinja2.template_owner import TemplateOwner

    def compile_template(source: str):
        return jinja2_rendering._compile_jinja2_template(
            template_source=source, template_category=TemplateCategory.LLM_PROMPT, template_owner=TemplateOwner.PIPELEX
        )

    sources = [f"Template {index}: {{{{ text }}}}" for index in range(4)]
    size = estimated_template_bytes(sources[0])
    TEMPLATES.resize(max_bytes=int(2.5 * size), max_entries=TEMPLATE_CACHE_MAX_ENTRIES)
    compiled = [compile_template(source) for source in sources[:2]]
    assert compile_template(sources[0]) is compiled[0]  # reused, and now the most recent
    compile_template(sources[2])  # evicts sources[1], the least recently used
    assert compile_template(sources[0]) is compiled[0]
    assert compile_template(sources[1]) is not compiled[1]  # compiled again
    assert len(TEMPLATES) == 2 and TEMPLATES.bytes <= TEMPLATES.max_bytes

    huge = "x" * (TEMPLATES.max_bytes // 14) + "{{ text }}"  # estimated beyond the whole budget
    assert compile_template(huge) is not compile_template(huge)
    assert len(TEMPLATES) == 2
