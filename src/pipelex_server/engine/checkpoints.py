"""Step checkpoints: a retried run skips the steps of its top-level pipeline that already finished.

The runtime dispatches every sub-pipe through the pipe router in scope. Ours records the working memory each
finished top-level step produced (the runtime's own transport dump, as JSON) under a key naming the step, and on a
retry of the same run answers those steps from the record instead of running them again. A PipeSequence resumes at
the first step that had not finished; a PipeParallel re-runs only its unfinished branches.

A step's key is ``{pipe_code}:{output_name}#{n}`` (``n`` counts the runs of that pipe among the top-level steps), so
it names the same step on every attempt of the run. Only the top-level pipeline's own steps are checkpointed: a
nested step is part of its top-level step and re-runs with it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pipelex.core.pipes.pipe_output import PipeOutput
from pipelex.pipe_run.pipe_router import PipeRouter
from pydantic_core import to_jsonable_python

logger = logging.getLogger(__name__)

SaveCheckpoint = Callable[[str, str, dict[str, Any]], Awaitable[None]]
Restored = Callable[[str, str], None]


class CheckpointingRouter(PipeRouter):
    def __init__(self, *, observer: Any, saved: dict[str, dict[str, Any]], save: SaveCheckpoint, restored: Restored | None = None) -> None:
        super().__init__(observer=observer)
        self._saved = saved
        self._save = save
        self._restored = restored
        self._occurrences: dict[str, int] = {}

    def _step_key(self, pipe_job: Any) -> str | None:
        # the stack holds the pipes above this one: one entry means a step of the top-level pipeline
        if len(pipe_job.pipe_run_params.pipe_stack) != 1:
            return None
        base = f"{pipe_job.pipe.code}:{pipe_job.output_name or ''}"
        occurrence = self._occurrences.get(base, 0)
        self._occurrences[base] = occurrence + 1
        return f"{base}#{occurrence}"

    async def run(self, pipe_job: Any) -> PipeOutput:
        key = self._step_key(pipe_job)
        if key is None:
            return await super().run(pipe_job)
        saved = self._saved.get(key)
        if saved is not None:
            from pipelex.runtime_bridge.primitives.hydration import hydrate_working_memory

            working_memory = hydrate_working_memory(saved)
            if self._restored is not None:
                self._restored(key, pipe_job.pipe.code)
            return PipeOutput(working_memory=working_memory, pipeline_run_id=pipe_job.job_metadata.run_metadata.pipeline_run_id)
        output = await super().run(pipe_job)
        try:
            dump = to_jsonable_python(output.working_memory.dump_for_transport())
        except Exception:  # a memory that cannot be dumped is not checkpointed; the step would simply run again
            logger.warning("could not checkpoint step %s", key, exc_info=True)
            return output
        await self._save(key, pipe_job.pipe.code, dump)
        return output
