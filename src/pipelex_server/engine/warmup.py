"""Warming the booted runtime: one dry run and one validation, and the provider modules a first live run needs."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from pipelex_server.engine.home import InferencePlan
from pipelex_server.storage import ObjectStore

WARM_UP_BUNDLE = """domain = "warmup"
main_pipe = "echo"

[pipe.echo]
type = "PipeLLM"
description = "Warm-up"
inputs = { text = "Text" }
output = "Text"
prompt = "Echo: $text"
"""

# Modules the first live run would otherwise import lazily (~0.8 s): provider SDK resources and types, instructor's
# provider handlers, the runtime's provider factories. Imported (not called) at warm-up, for the enabled backends.
LIVE_WARM_MODULES: dict[str, tuple[str, ...]] = {
    "openai": (
        "pipelex.providers.openai.openai_responses_llm_worker",
        "pipelex.providers.openai.openai_completions_llm_worker",
        "pipelex.providers.openai.openai_client_factory",
        "pipelex.providers.openai.openai_responses_factory",
        "pipelex.providers.openai.openai_exceptions",
        "openai.types.responses",
        "openai.resources.responses.responses",  # the resource packages are lazy (lazy_packages.py): name the modules
        "openai.resources.chat.chat",
        "openai.resources.chat.completions.completions",
        "openai.lib.streaming.responses",
        "openai.lib._parsing._responses",
        "instructor.v2.providers.openai.client",
        "instructor.v2.providers.openai.handlers",
        "instructor.mode",
        "requests",
        "truststore",
        "jiter",
        "httpcore2._async.connection_pool",
        "httpcore2._async.http11",
        "httpcore2._backends.anyio",
        "anyio._backends._asyncio",
        "anyio.streams.tls",
    ),
    "anthropic": ("pipelex.providers.anthropic", "anthropic.types", "anthropic.resources.messages", "instructor.v2.providers.anthropic"),
    "mistral": ("instructor.v2.providers.mistral",),
    "google": ("instructor.v2.providers.genai",),
}


def _warm_openai_response_parsing() -> None:
    """The OpenAI SDK builds its response validators lazily on the first parse (~0.18 s): build them now."""
    from openai._models import construct_type
    from openai.types.responses import Response

    sample = {
        "id": "resp_warm",
        "object": "response",
        "created_at": 0,
        "model": "warm",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "m",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "", "annotations": []}],
            },
            {"type": "function_call", "id": "f", "call_id": "c", "name": "n", "arguments": "{}", "status": "completed"},
        ],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": 2,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
    construct_type(type_=Response, value=sample)


def import_provider_modules(plan: InferencePlan) -> None:
    """Import what the first live run would import lazily, for the enabled backends (call it in a thread)."""
    for backend in plan.enabled:
        for name in LIVE_WARM_MODULES.get(backend, ()):
            with contextlib.suppress(Exception):
                importlib.import_module(name)
    if "openai" in plan.enabled:
        with contextlib.suppress(Exception):
            _warm_openai_response_parsing()


async def warm_up(*, plan: InferencePlan, store: ObjectStore, validate: Callable[..., Awaitable[Any]]) -> None:
    """A dry run and a validation of a one-pipe bundle, so the first request does not pay the runtime's lazy work."""
    if plan.is_live:
        await asyncio.to_thread(import_provider_modules, plan)
    from pipelex.pipeline.runner import PipelexMTHDSProtocol
    from pipelex.system.pipe_run_mode import PipeRunMode

    from pipelex_server.engine.storage import bound

    runner = PipelexMTHDSProtocol(pipe_run_mode=PipeRunMode.DRY, library_dirs=[])
    with bound(store):
        await runner.execute(mthds_contents=[WARM_UP_BUNDLE], inputs={"text": "warm"})
    await validate(mthds_contents=[WARM_UP_BUNDLE], pipe_code=None)
