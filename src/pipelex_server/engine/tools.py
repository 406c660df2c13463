"""Editor tooling over one `.mthds` text and the model deck: lint, format, and the model reference check.

Lint and format are `pipelex_tools` (the embedded MTHDS schema and the canonical formatter), run in a child process: a
text that does not parse is a produced verdict (its diagnostics), never a refusal; one that crashes or stalls the native
parser is a 422 naming `content`. The model reference check asks the runtime's own parser and
deck lookups, the ones a validation runs. Every refusal is a 422 `request.invalid` naming the field or parameter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import weakref
from typing import Any

from pipelex_server.errors import ApiProblem

logger = logging.getLogger(__name__)

TOOL_TIME_LIMIT_SECONDS = 10.0  # one lint or format (a 1 MiB text takes milliseconds)
TOOL_MAX_CONCURRENT = 4  # lint and format children at once; more wait their turn

# The longest model reference the check accepts once trimmed (the official server's bound).
MAX_MODEL_REFERENCE_LENGTH = 199


def field_problem(field: str, detail: str, *, where: str = "body") -> ApiProblem:
    """A 422 `request.invalid` naming one field of the body (or one query parameter)."""
    return ApiProblem(status=422, code="request.invalid", detail=detail, params={"field": field}, location={"path": [where, field]})


_TOOL_SCRIPT = """
import json, sys
import pipelex_tools
ask = json.loads(sys.stdin.buffer.read())
try:
    if ask["op"] == "lint":
        answer = {"ok": pipelex_tools.lint_mthds(ask["content"], source=ask.get("source"))}
    else:
        answer = {"ok": pipelex_tools.format_mthds(ask["content"], options=ask.get("options"))}
except (ValueError, TypeError, OverflowError) as exc:
    answer = {"refused": str(exc)}
sys.stdout.write(json.dumps(answer))
"""
_DONE = {"lint": "linted", "format": "formatted"}
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _tool_slots() -> asyncio.Semaphore:
    """The running loop's bound on lint and format children (a semaphore belongs to one loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _slots:
        _slots[loop] = asyncio.Semaphore(TOOL_MAX_CONCURRENT)
    return _slots[loop]


async def _run_tool(ask: dict[str, Any]) -> dict[str, Any]:
    """One `pipelex_tools` call in a child process of its own, bounded in time. Its parser is native code that
    recurses on the text and keeps going past a syntax error, so a crafted text can crash it (a stack overflow) or
    hold it for minutes; in a child, that costs the caller a 422 and never this server."""
    async with _tool_slots():
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            _TOOL_SCRIPT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(child.communicate(json.dumps(ask).encode()), timeout=TOOL_TIME_LIMIT_SECONDS)
        except TimeoutError:
            child.kill()
            await child.wait()
            raise field_problem(
                "content", f"The text could not be {_DONE[ask['op']]} within {TOOL_TIME_LIMIT_SECONDS:.0f}s; check its syntax."
            ) from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            raise
    if child.returncode != 0:
        logger.warning("the MTHDS %s tool ended with status %s", ask["op"], child.returncode)
        raise field_problem("content", f"The text could not be {_DONE[ask['op']]}: it nests too deeply for the MTHDS parser.")
    answer = json.loads(out)
    if "refused" in answer:
        raise field_problem("options", f"The formatter refused its options: {answer['refused']}")
    return answer["ok"]


async def lint(content: str, *, source: str | None) -> dict[str, Any]:
    """The schema's diagnostics for one `.mthds` text (`{"diagnostics": [...]}`)."""
    return await _run_tool({"op": "lint", "content": content, "source": source})


async def format_text(content: str, *, options: dict[str, Any] | None) -> dict[str, Any]:
    """The canonical formatting of one `.mthds` text (`formatted`, `changed`, `diagnostics`). A text with a syntax
    error comes back unchanged, with its diagnostics; an option the formatter refuses is a 422 naming `options`."""
    return await _run_tool({"op": "format", "content": content, "options": options})


def check_model_reference(reference: str, category: str | None) -> dict[str, Any]:
    """Whether one model reference (as a method's `model` field writes it) resolves on this runtime, as what, to which
    model: a verdict whatever the resolution. The runtime must be booted."""
    from pipelex.cogt.models.exceptions import ModelReferenceParseError
    from pipelex.cogt.models.model_reference import ModelReference
    from pipelex.cogt.models.model_reference_check import ModelCheckCategory
    from pipelex.cogt.models.model_reference_check import check_model_reference as runtime_check
    from pipelex.runtime_hub import get_model_deck

    try:
        parsed = ModelReference.parse(reference)
    except ModelReferenceParseError as exc:
        raise field_problem("reference", f"The model reference does not parse: {exc.message}", where="query") from exc
    if len(parsed.raw) > MAX_MODEL_REFERENCE_LENGTH:
        raise field_problem(
            "reference",
            f"The model reference holds {len(parsed.raw)} characters once trimmed, more than the {MAX_MODEL_REFERENCE_LENGTH} accepted.",
            where="query",
        )
    wanted = None
    if category is not None:
        try:
            wanted = ModelCheckCategory(category)
        except ValueError as exc:
            valid = ", ".join(sorted(member.value for member in ModelCheckCategory))
            raise field_problem("type", f"Unknown model category {category[:64]!r}. Valid values: {valid}.", where="query") from exc
    verdict = runtime_check(model_deck=get_model_deck(), reference=parsed, category=wanted)
    return verdict.model_dump(mode="json")
