"""The protocol's views of one validation, computed once from the runtime's report or failure and cached with it.

`/v1/validate` answers what the official server does: the report's artifacts (contracts, input and output forms,
liftable pipes, the files each step reads), its warnings as problem items, the pipe a selector-less run would
execute, and the runtime's own Markdown for either verdict. They ride the verdict under `protocol_report`, apart
from the fields `/api/v1/validate` answers, so that route's shape does not change.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

# The report's artifacts the valid arm carries as they are (each keyed by namespaced pipe ref, but liftable_pipes).
REPORT_ARTIFACTS = ("pipe_io_contracts", "input_form", "output_form", "liftable_pipes", "tree_files_read", "tree_file_readers")


def default_pipe_ref(blueprint: dict[str, Any] | None) -> str | None:
    """The pipe a selector-less run of inline contents executes: the primary blueprint's main pipe, in its domain."""
    if not blueprint or not blueprint.get("main_pipe") or not blueprint.get("domain"):
        return None
    return f"{blueprint['domain']}.{blueprint['main_pipe']}"


def valid_views(report: Any, dump: dict[str, Any], *, entry_pipe_ref: str | None = None) -> dict[str, Any]:
    """The valid arm's views. `entry_pipe_ref` is a method tree's entry pipe, which a blueprint cannot tell."""
    views: dict[str, Any] = {name: dump[name] for name in REPORT_ARTIFACTS if dump.get(name) is not None}
    views["default_pipe_ref"] = entry_pipe_ref or default_pipe_ref(dump.get("bundle_blueprint"))
    try:
        from pipelex.pipeline.validation_errors import warning_problem_items
        from pipelex.pipeline.validation_render import format_validate_markdown

        items = warning_problem_items(warnings=list(report.warnings))
        views["warnings"] = [item.model_dump(mode="json", exclude_none=True) for item in items]
        views["rendered_markdown"] = format_validate_markdown(dump)
    except Exception:  # presentation only: a valid bundle must never read as invalid because a view failed
        logger.warning("could not render the validation's warnings or Markdown", exc_info=True)
    return views


def invalid_views(items: list[dict[str, Any]], message: str) -> dict[str, Any]:
    """The invalid arm's views: its problem items whole (params, suggestions, fixes) and the runtime's Markdown."""
    try:
        from mthds.protocol.problem.models import ProblemItem
        from pipelex.pipeline.validation_render import render_invalid_verdict_markdown

        parsed = [ProblemItem.model_validate(item) for item in items]
        return {
            "errors": [item.model_dump(mode="json", exclude_none=True) for item in parsed],
            "rendered_markdown": render_invalid_verdict_markdown(items=parsed, message=message),
        }
    except Exception:  # an item the standard's model refuses: the answer falls back on the short items
        logger.warning("could not render the invalid verdict's problem items", exc_info=True)
        return {}
