"""Bundle validation: static checks plus a dry run of every pipe, with verdicts cached by content hash."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from pipelex_server.engine.caches import MIB, ByteLRU
from pipelex_server.engine.method_tree import written_tree
from pipelex_server.engine.method_tree_files import MethodTreeFiles
from pipelex_server.settings import Settings


def verdict_bytes(verdict: dict[str, Any]) -> int:
    """A verdict's weight in the cache: the length of its compact JSON encoding."""
    return len(json.dumps(verdict, separators=(",", ":"), ensure_ascii=False, default=str).encode())


class Validator:
    """Validates bundles; keeps verdicts bounded by VALIDATE_CACHE_SIZE entries and VALIDATE_CACHE_MAX_MIB (JSON bytes)."""

    def __init__(self, settings: Settings) -> None:
        self.verdicts = ByteLRU(max_bytes=int(settings.validate_cache_max_mib * MIB), max_entries=settings.validate_cache_size)

    async def validate(
        self, *, mthds_contents: list[str] | None, pipe_code: str | None, tree: MethodTreeFiles | None = None
    ) -> dict[str, Any]:
        """A verdict for any text: never raises for a bad bundle (the verdict says what is wrong). A method ``tree``
        is validated whole, written out as the caller's library directory, in place of ``mthds_contents``."""
        from pipelex.pipeline.runner import PipelexMTHDSProtocol
        from pipelex.system.pipe_run_mode import PipeRunMode

        from pipelex_server.engine.results import shape_validation, shape_validation_failure

        source: Any = (
            ("tree", tree.digest, sorted((address, dep.digest) for address, dep in tree.dependencies.items()))
            if tree is not None
            else mthds_contents
        )
        key = hashlib.sha256(repr((source, pipe_code)).encode()).hexdigest()
        cached = self.verdicts.get(key)
        if cached is not None:
            return cached
        try:
            entry_pipe_ref = None
            if tree is not None:
                report, entry_pipe_ref = await self._validate_tree(tree, pipe_code)
            else:
                runner = PipelexMTHDSProtocol(pipe_run_mode=PipeRunMode.DRY, library_dirs=[])
                extra = {"graph_pipe_code": pipe_code} if pipe_code else None
                report = await runner.validate(mthds_contents=mthds_contents, extra=extra)
            verdict = shape_validation(report, pipe_code=pipe_code, entry_pipe_ref=entry_pipe_ref)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            verdict = shape_validation_failure(exc)
        if self.verdicts.enabled:
            self.verdicts.put(key, verdict, verdict_bytes(verdict))
        return verdict

    @staticmethod
    async def _validate_tree(tree: MethodTreeFiles, pipe_code: str | None) -> tuple[Any, str | None]:
        """The runtime's validation of a whole method tree, and its entry pipe (None when it has none): the graph is
        drawn from the pipe a run would start at."""
        from pipelex.pipeline.validate_in_process import validate_bundles_in_process

        async with written_tree(tree, pipe_code=None, entry="optional") as written:
            report = await validate_bundles_in_process(
                method_dir=written.directory,
                methods_dirs=written.methods_dirs,  # the dependency trees it carries
                library_dirs_are_callers=True,
                graph_pipe_code=pipe_code or written.pipe_code,
                log_context="Protocol validate",
            )
        return report, written.pipe_code
