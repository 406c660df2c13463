"""Whether the runtime can serve: the boot's outcome, a bounded wait for it, and the 503 that says it cannot yet."""

from __future__ import annotations

import asyncio
import math

from pipelex_server.errors import ApiProblem

# Retry-After hints (seconds): a boot in progress takes a few seconds (docs/benchmarks.md); a failed one needs the
# operator, so clients back off longer (with --workers N, another process may still serve them).
RETRY_AFTER_STARTING_SECONDS = 5
RETRY_AFTER_FAILED_SECONDS = 30
_REASON_MAX_CHARS = 300


def describe_failure(exc: BaseException) -> str:
    """A boot error in one short line: its class and the first line of its message."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= _REASON_MAX_CHARS else text[: _REASON_MAX_CHARS - 1] + "…"


class Readiness:
    """Set once, when the boot ends: ready, or failed with the error the boot raised."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.error: BaseException | None = None

    def succeeded(self) -> None:
        self.event.set()

    def failed(self, exc: BaseException) -> None:
        self.error = exc
        self.event.set()

    @property
    def is_ready(self) -> bool:
        return self.event.is_set() and self.error is None

    @property
    def status(self) -> str:
        """``ok``, ``starting`` or ``failing: <reason>`` (what /health/ready reports)."""
        if not self.event.is_set():
            return "starting"
        if self.error is not None:
            return f"failing: boot error: {describe_failure(self.error)}"
        return "ok"

    @property
    def retry_after_seconds(self) -> int:
        return RETRY_AFTER_FAILED_SECONDS if self.error is not None else RETRY_AFTER_STARTING_SECONDS

    async def wait(self, timeout: float) -> None:
        """Return once ready; raise 503 ``server.not_ready`` after ``timeout`` seconds, or at once if the boot failed."""
        if not self.event.is_set():
            try:
                if math.isinf(timeout):
                    await self.event.wait()
                else:
                    await asyncio.wait_for(self.event.wait(), timeout)
            except TimeoutError as exc:
                raise self.problem() from exc
        if self.error is not None:
            raise self.problem()

    def problem(self) -> ApiProblem:
        if self.error is not None:
            detail = "The pipelex runtime failed to boot, so this server cannot serve this request; see the server log and /health/ready."
        else:
            detail = "The pipelex runtime is still starting; retry after the delay in Retry-After (or wait for /health/ready)."
        return ApiProblem(
            status=503,
            code="server.not_ready",
            detail=detail,
            headers={"Retry-After": str(self.retry_after_seconds)},
        )
