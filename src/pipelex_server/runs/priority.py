"""Acknowledgements first: while /start requests are being acknowledged, runs of this process that have not started
yet wait (at most ACK_PRIORITY_MAX_WAIT_SECONDS), so an ack does not queue behind the CPU of the runs acked before it.

Why: acks and runs share one event loop. Under a burst of starts the loop is saturated, and every step of an ack waits
its turn behind the steps of the runs already accepted: the ack's latency grows with the number of runs in flight
(Little's law: in flight x CPU per start). A run that has not started yet loses nothing by letting the acks pending now
finish first: it is already accepted, its client is not waiting on it. Runs already executing are never paused.

The wait is bounded, so a steady stream of acks never starves the runs: a run waits for a moment with no ack pending,
or for the bound, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class AckPriority:
    """The acks in progress in this process, and the wait runs take for them (``max_wait_seconds`` 0: no wait)."""

    def __init__(self, max_wait_seconds: float) -> None:
        self.max_wait_seconds = max_wait_seconds
        self.pending = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @contextlib.contextmanager
    def acknowledging(self) -> Iterator[None]:
        """Around one ack: from the request's admission to its run being handed to the executor."""
        self.pending += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self.pending -= 1
            if self.pending == 0:
                self._quiet.set()

    async def yield_to_acks(self) -> None:
        """Wait until no ack is pending, at most ``max_wait_seconds``; at once when none is."""
        if self.pending == 0 or self.max_wait_seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.max_wait_seconds):
                await self._quiet.wait()
