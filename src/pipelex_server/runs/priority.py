"""Acknowledgements first: while /start requests are being acknowledged, runs of this process that have not started
yet wait (at most ACK_PRIORITY_MAX_WAIT_SECONDS), so an ack does not queue behind the CPU of the runs acked before it.

Why: acks and runs share one event loop. Under a burst of starts the loop is saturated, and every step of an ack waits
its turn behind the steps of the runs already accepted: the ack's latency grows with the number of runs in flight
(Little's law: in flight x CPU per start). A run that has not started yet loses nothing by letting the acks pending now
finish first: it is already accepted, its client is not waiting on it. Runs already executing are never paused.

An ack counts from the moment its request arrives (api/ack_window.py marks it before its body is read) until its answer
is sent. A client that starts runs one after the other sends its next request a moment after the previous answer, so
"no ack pending" must last a short settle window (ACK_PRIORITY_SETTLE_MS) before the runs go: otherwise each run would
begin in that gap and the next ack would share the loop with it.

The wait is bounded, so a steady stream of acks never starves the runs: a run waits for the acks to settle, or for the
bound, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class AckPriority:
    """The acks in progress in this process, and the wait runs take for them (``max_wait_seconds`` 0: no wait).

    ``settle_seconds``: how long no ack must be pending before waiting runs go (0: as soon as none is)."""

    def __init__(self, max_wait_seconds: float, settle_seconds: float = 0.0) -> None:
        self.max_wait_seconds = max_wait_seconds
        self.settle_seconds = settle_seconds
        self.pending = 0
        self._generation = 0  # counts acks begun: a settle timer armed before the latest one is stale
        self._settled = asyncio.Event()
        self._settled.set()

    @contextlib.contextmanager
    def acknowledging(self) -> Iterator[None]:
        """Around one ack: from the request's arrival to its answer (nesting counts once per level)."""
        self.pending += 1
        self._generation += 1
        self._settled.clear()
        try:
            yield
        finally:
            self.pending -= 1
            if self.pending == 0:
                self._arm_settle()

    def _arm_settle(self) -> None:
        if self.settle_seconds <= 0:
            self._settled.set()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): nothing can be waiting
            self._settled.set()
            return
        loop.call_later(self.settle_seconds, self._settle, self._generation)

    def _settle(self, generation: int) -> None:
        if generation == self._generation and self.pending == 0:
            self._settled.set()

    async def yield_to_acks(self) -> None:
        """Wait until the acks have settled, at most ``max_wait_seconds``; at once when they have."""
        if self._settled.is_set() or self.max_wait_seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.max_wait_seconds):
                await self._settled.wait()
