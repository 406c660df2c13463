"""Executing one run in this process: the runtime call under the run's time limit, its progress bridged into the
run's events, its output inlined or offloaded to object storage. Shared by in-process runs and Temporal attempts."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from typing import Any

from pipelex_server.engine.runtime import Engine
from pipelex_server.engine.types import Checkpoints, RunOutcome
from pipelex_server.errors import ApiProblem
from pipelex_server.observability import logs, metrics
from pipelex_server.observability.tracing_spans import run_span
from pipelex_server.runs.documents import problem_document
from pipelex_server.runs.events import RunEvents
from pipelex_server.runs.model import Caller, RunRequest
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectStore, StorageUnavailable
from pipelex_server.storage.keys import output_key, run_prefix

logger = logging.getLogger(__name__)


class RunExecution:
    def __init__(self, *, settings: Settings, engine: Engine, store: ObjectStore, events: RunEvents) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.events = events

    @run_span  # one span per executed run (docs/tracing.md)
    async def run(
        self,
        row: dict[str, Any],
        caller: Caller,
        request: RunRequest,
        request_id: str | None,
        checkpoints: Checkpoints | None = None,
        remaining_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Execute the run; returns the values it ends with. ``remaining_seconds`` is what is left of its time limit
        (all of it by default). A cancellation is raised as is, for the caller to record."""
        run_id = row["id"]
        logs.bind_run(row["public_id"], caller.id)  # the log lines of this run (the runtime's too) name it
        timeout = self.settings.run_timeout_seconds
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        usage_by_pipe: dict[str, dict[str, int]] = {}

        def record(event: str, data: dict[str, Any]) -> None:
            if event == "usage":  # folded into the pipe's pipe_finished event
                tokens = usage_by_pipe.setdefault(data.get("pipe_code") or "", {})
                for category, count in data["tokens"].items():
                    tokens[category] = tokens.get(category, 0) + count
                return
            if event in ("pipe_finished", "pipe_failed") and data.get("pipe_code") in usage_by_pipe:
                data = {**data, "usage": {"tokens": usage_by_pipe.pop(data["pipe_code"])}}
            self.events.buffer(run_id, event, data)

        def progress(event: str, data: dict[str, Any]) -> None:
            if threading.get_ident() == loop_thread:
                record(event, data)
            else:
                loop.call_soon_threadsafe(record, event, data)

        metrics.run_executing(1)
        try:
            # a run re-queued at boot may get here before the runtime is up: it waits as long as the boot takes
            await self.engine.wait_ready(timeout=math.inf)
            async with asyncio.timeout(timeout if remaining_seconds is None else remaining_seconds):
                tree = request.tree_files
                if tree is None and request.tree is not None:  # executed elsewhere than accepted: read back
                    tree = await self.engine.stored_method_tree(request.tree, scope=caller.scope, dependencies=request.tree_dependencies)
                outcome = await self.engine.execute(
                    **request.engine_arguments(),
                    tree=tree,
                    scope=caller.scope,
                    storage_scope=run_prefix(caller.scope, row["public_id"]),
                    request_id=request_id,
                    progress=progress,
                    checkpoints=checkpoints,
                )
            return await self._completed_values(row, caller, request, outcome)
        except TimeoutError:
            problem = ApiProblem(
                status=422,
                code="run.timed_out",
                detail=f"The run passed its time limit of {timeout:g} s (RUN_TIMEOUT_SECONDS) and was stopped.",
                params={"timeout_seconds": timeout},
            )
            return {"state": "FAILED", "error": problem.to_document(request_id=request_id)}
        except ApiProblem as problem:
            return {"state": "FAILED", "error": problem.to_document(request_id=request_id)}
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("run %s crashed", run_id)
            return {"state": "FAILED", "error": problem_document(500, "runtime.unexpected", "The run hit an unexpected server error.")}
        finally:
            metrics.run_executing(-1)

    async def _completed_values(self, row: dict[str, Any], caller: Caller, request: RunRequest, outcome: RunOutcome) -> dict[str, Any]:
        run_id, public_id = row["id"], row["public_id"]
        values: dict[str, Any] = {"state": "COMPLETED", "main_stuff_name": outcome.main_stuff_name, "usage": outcome.usage}
        if outcome.crate_fingerprint:
            values["crate_fingerprint"] = outcome.crate_fingerprint
        if outcome.input_rewrites:  # keep the stored request small: inputs now live in storage
            values["request"] = request.with_rewritten_urls(outcome.input_rewrites).to_json()
        encoded = json.dumps(outcome.pipe_output, separators=(",", ":"), ensure_ascii=False).encode()
        if len(encoded) <= self.settings.output_inline_max_bytes:
            values["output"] = outcome.pipe_output
            return values
        # too large to inline: kept in object storage, linked from the run document and the callbacks
        try:
            await self.store.put(output_key(caller.scope, public_id), encoded, content_type="application/json")
        except StorageUnavailable:
            logger.exception("could not store the output of run %s: it stays inline", run_id)
            values["output"] = outcome.pipe_output
            return values
        values["output"] = None
        values["output_url"] = f"/api/v1/runs/{public_id}/output"
        return values
