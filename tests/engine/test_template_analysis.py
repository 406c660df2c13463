"""The remembered template analyses answer as the runtime's own, hand out fresh copies and never remember a failure."""

from __future__ import annotations

import pytest

from pipelex_server.engine.template_analysis import install_template_analysis_cache
from tests.support.bundles import STRUCTURED_BUNDLE, main_content, seed_request

TEMPLATES = [
    "Summarize in one sentence:\n{{ text }}",
    "{% if person %}{{ person.name }} is {{ person.age }}{% endif %} {{ other | upper }}",
    "{{ doc._private }} and {{ doc._stuff_name }} then {{ x.y.z }}",
]


@pytest.fixture
def analyses(session_app):
    """The runtime's analyses before the patch (as its modules imported them) and after it."""
    from pipelex.cogt.templating import template_blueprint
    from pipelex.core.stuffs.stuff_artefact import StuffArtefact
    from pipelex.pipe_machinery import template_guard_lint
    from pipelex.tools.jinja2.jinja2_parsing import check_jinja2_parsing
    from pipelex.tools.jinja2.jinja2_private_names import detect_private_name_references
    from pipelex.tools.jinja2.jinja2_required_variables import detect_jinja2_required_variables

    install_template_analysis_cache()
    return {
        "original": (detect_jinja2_required_variables, check_jinja2_parsing, detect_private_name_references),
        "patched": (
            template_blueprint.detect_jinja2_required_variables,
            template_blueprint.check_jinja2_parsing,
            template_guard_lint.detect_private_name_references,
        ),
        "allowed": StuffArtefact.__template_surface__.private_names,
    }


def test_the_remembered_analyses_answer_as_the_runtime_does(analyses):
    from pipelex.tools.jinja2.template_category import TemplateCategory

    (required, parsing, private), (required_memo, parsing_memo, private_memo) = analyses["original"], analyses["patched"]
    assert required_memo is not required and private_memo is not private and parsing_memo is not parsing
    for category in (TemplateCategory.LLM_PROMPT, TemplateCategory.MARKDOWN):
        for source in TEMPLATES:
            for _ in range(2):  # computed, then remembered
                expected = required(template_category=category, template_source=source)
                assert required_memo(template_category=category, template_source=source) == expected
                names = dict(template_category=category, template_source=source, allowed_private_names=analyses["allowed"])
                assert private_memo(**names) == private(**names)
                assert parsing_memo(template_source=source, template_category=category) is None
    assert private_memo(**names) == ["_private"]  # the lint still refuses a private read


def test_a_remembered_answer_is_a_fresh_copy(analyses):
    from pipelex.tools.jinja2.template_category import TemplateCategory

    required_memo = analyses["patched"][0]
    first = required_memo(template_category=TemplateCategory.LLM_PROMPT, template_source=TEMPLATES[1])
    first.add("intruder")
    assert "intruder" not in required_memo(template_category=TemplateCategory.LLM_PROMPT, template_source=TEMPLATES[1])


def test_a_bad_template_raises_every_time(analyses):
    from pipelex.tools.jinja2.exceptions import Jinja2DetectVariablesError, Jinja2TemplateSyntaxError
    from pipelex.tools.jinja2.template_category import TemplateCategory

    required_memo, parsing_memo, _private = analyses["patched"]
    for _ in range(2):
        with pytest.raises(Jinja2TemplateSyntaxError):
            parsing_memo(template_source="{% if %}", template_category=TemplateCategory.LLM_PROMPT)
        with pytest.raises(Jinja2DetectVariablesError):
            required_memo(template_category=TemplateCategory.LLM_PROMPT, template_source="{{ unclosed")


async def test_runs_of_one_method_still_answer_and_still_refuse_a_missing_input(client):
    for _ in range(3):
        resp = await client.post("/v1/execute", json=seed_request(dry_run=True))
        assert resp.status_code == 200, resp.text
    body = {"pipe_code": "extract_person", "mthds_contents": [STRUCTURED_BUNDLE], "inputs": {}, "dry_run": True}
    for _ in range(2):
        refused = await client.post("/v1/execute", json=body)
        assert refused.status_code == 422, refused.text
    assert main_content(resp.json()) is not None


def test_a_template_too_long_to_remember_is_analysed_as_before(analyses):
    from pipelex.tools.jinja2.template_category import TemplateCategory

    from pipelex_server.engine.template_analysis import MAX_SOURCE_CHARS

    (required, _parsing, private), (required_memo, parsing_memo, private_memo) = analyses["original"], analyses["patched"]
    source = "{{ a.b }} {{ doc._private }} " + "x" * MAX_SOURCE_CHARS
    category = TemplateCategory.LLM_PROMPT
    assert required_memo(template_category=category, template_source=source) == required(template_category=category, template_source=source)
    names = dict(template_category=category, template_source=source, allowed_private_names=analyses["allowed"])
    assert private_memo(**names) == private(**names) == ["_private"]
    assert parsing_memo(template_source=source, template_category=category) is None
