"""The runtime's static template analyses, remembered per template source (patched into the runtime once).

Every run rebuilds its pipe job, and the runtime validates the job's pipe again: for a PipeLLM that parses its prompt
template three times (the variables it needs, the private-name lint, the syntax check of the prompt blueprint), each
time in a fresh Jinja environment, ~0.5 ms of CPU per run of a one-prompt method (py-spy: 5-6 % of a seed
``/v1/execute``). Each of these is a pure function of the template's source and category (and, for the lint, of the
fixed set of allowed private names), so its answer is remembered: the variables and refused names as immutable
copies handed out as fresh lists and sets, a parse only when it succeeded. A template that fails raises as before
and is never remembered. Bounded: ``ENTRIES`` sources per analysis, least recently used out first, and only sources of
at most ``MAX_SOURCE_CHARS`` characters (a longer one is analysed every time): 3 x 256 short sources at most.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

ENTRIES = 256
MAX_SOURCE_CHARS = 8192
_MARK = "_pipelex_server_memoized"


def _patch(module: Any, name: str, make: Callable[[Any], Any]) -> None:
    original = getattr(module, name)
    if getattr(original, _MARK, False):
        return
    replacement = make(original)
    setattr(replacement, _MARK, True)
    setattr(module, name, replacement)


def _required_variables(original: Any) -> Any:
    @lru_cache(maxsize=ENTRIES)
    def remembered(template_category: Any, template_source: str) -> frozenset[str]:
        return frozenset(original(template_category=template_category, template_source=template_source))

    def detect_jinja2_required_variables(*, template_category: Any, template_source: str) -> set[str]:
        if len(template_source) > MAX_SOURCE_CHARS:
            return original(template_category=template_category, template_source=template_source)
        return set(remembered(template_category, template_source))

    return detect_jinja2_required_variables


def _parsing(original: Any) -> Any:
    @lru_cache(maxsize=ENTRIES)
    def remembered(template_source: str, template_category: Any) -> bool:
        original(template_source, template_category=template_category)  # raises for a bad template: not remembered
        return True

    def check_jinja2_parsing(template_source: str, *, template_category: Any = None) -> None:
        if template_category is None:  # the runtime's own default, as its signature has it
            original(template_source)
            return
        if len(template_source) > MAX_SOURCE_CHARS:
            original(template_source, template_category=template_category)
            return
        remembered(template_source, template_category)

    return check_jinja2_parsing


def _private_names(original: Any) -> Any:
    @lru_cache(maxsize=ENTRIES)
    def remembered(template_category: Any, template_source: str, allowed_private_names: frozenset[str]) -> tuple[str, ...]:
        return tuple(
            original(template_category=template_category, template_source=template_source, allowed_private_names=allowed_private_names)
        )

    def detect_private_name_references(*, template_category: Any, template_source: str, allowed_private_names: frozenset[str]) -> list[str]:
        if len(template_source) > MAX_SOURCE_CHARS:
            return original(
                template_category=template_category, template_source=template_source, allowed_private_names=allowed_private_names
            )
        return list(remembered(template_category, template_source, frozenset(allowed_private_names)))

    return detect_private_name_references


def install_template_analysis_cache() -> None:
    """Patch the three analyses where the run's pipe validation calls them (at the runtime's boot; idempotent)."""
    from pipelex.cogt.templating import template_blueprint
    from pipelex.pipe_machinery import template_guard_lint

    _patch(template_blueprint, "detect_jinja2_required_variables", _required_variables)
    _patch(template_blueprint, "check_jinja2_parsing", _parsing)
    _patch(template_guard_lint, "detect_private_name_references", _private_names)
