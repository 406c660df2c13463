"""Bundle validation: static checks plus a dry run of every pipe, with verdicts cached by content hash."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from pipelex_server.engine.caches import MIB, ByteLRU
from pipelex_server.settings import Settings


def verdict_bytes(verdict: dict[str, Any]) -> int:
    """A verdict's weight in the cache: the length of its compact JSON encoding."""
    return len(json.dumps(verdict, separators=(",", ":"), ensure_ascii=False, default=str).encode())


class Validator:
    """Validates bundles; keeps verdicts bounded by VALIDATE_CACHE_SIZE entries and VALIDATE_CACHE_MAX_MIB (JSON bytes)."""

    def __init__(self, settings: Settings) -> None:
        self.verdicts = ByteLRU(max_bytes=int(settings.validate_cache_max_mib * MIB), max_entries=settings.validate_cache_size)

    async def validate(self, *, mthds_contents: list[str], pipe_code: str | None) -> dict[str, Any]:
        """A verdict for any text: never raises for a bad bundle (the verdict says what is wrong)."""
        from pipelex.pipeline.runner import PipelexMTHDSProtocol
        from pipelex.system.pipe_run_mode import PipeRunMode

        from pipelex_server.engine.results import shape_validation, shape_validation_failure

        key = hashlib.sha256(repr((mthds_contents, pipe_code)).encode()).hexdigest()
        cached = self.verdicts.get(key)
        if cached is not None:
            return cached
        runner = PipelexMTHDSProtocol(pipe_run_mode=PipeRunMode.DRY, library_dirs=[])
        extra = {"graph_pipe_code": pipe_code} if pipe_code else None
        try:
            report = await runner.validate(mthds_contents=mthds_contents, extra=extra)
            verdict = shape_validation(report, pipe_code=pipe_code)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            verdict = shape_validation_failure(exc)
        if self.verdicts.enabled:
            self.verdicts.put(key, verdict, verdict_bytes(verdict))
        return verdict
