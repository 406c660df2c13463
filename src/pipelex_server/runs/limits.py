"""Per-caller limits on runs: queued or running runs, open event streams, callback redeliveries.

- ``MAX_ACTIVE_RUNS_PER_CALLER``: counted in the run store when a run is inserted, so it holds across processes.
- ``SSE_MAX_STREAMS_PER_CALLER``: counted here, per process (a stream holds a connection of this process).
- ``CALLBACK_MAX_REDELIVERIES``: counted on the run, in the store.
One caller at its limit never blocks another caller.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from pipelex_server.errors import ApiProblem

ACTIVE_RETRY_AFTER_SECONDS = 10
STREAMS_RETRY_AFTER_SECONDS = 5

T = TypeVar("T")


def too_many_active(limit: int) -> ApiProblem:
    return ApiProblem(
        status=429,
        code="run.too_many_active",
        detail=(
            f"You already have {limit} runs queued or running (MAX_ACTIVE_RUNS_PER_CALLER); "
            "wait for some to end, or cancel some, then send the request again."
        ),
        headers={"Retry-After": str(ACTIVE_RETRY_AFTER_SECONDS)},
        params={"limit": limit},
    )


def redelivery_limit(limit: int) -> ApiProblem:
    return ApiProblem(
        status=429,
        code="callback.redelivery_limit",
        detail=(
            f"The run's callbacks were already redelivered {limit} times, the most a run allows (CALLBACK_MAX_REDELIVERIES). "
            "Read the run document instead: GET /api/v1/runs/{id}."
        ),
        params={"limit": limit},
    )


class StreamSlots:
    """The event streams each caller has open in this process; a caller at ``limit`` is refused another one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}  # an entry exists only while the caller has a stream open
        self._waiters: list[tuple[str, int, asyncio.Future[None]]] = []

    def open_for(self, caller_id: str) -> int:
        return self._open.get(caller_id, 0)

    @property
    def callers(self) -> int:
        """How many callers have a stream open."""
        return len(self._open)

    def hold(self, caller_id: str, stream: AsyncIterator[T]) -> AsyncGenerator[T, None]:
        """Take one of the caller's slots for ``stream`` (429 when none is free); the slot is freed when the stream
        ends, is closed (the client disconnected), or is dropped without ever being read."""
        count = self._open.get(caller_id, 0)
        if count >= self.limit:
            raise ApiProblem(
                status=429,
                code="events.too_many_streams",
                detail=(
                    f"You already have {count} event streams open on this server process (SSE_MAX_STREAMS_PER_CALLER); "
                    "close one, or read the run document instead."
                ),
                headers={"Retry-After": str(STREAMS_RETRY_AFTER_SECONDS)},
                params={"limit": self.limit},
            )
        self._open[caller_id] = count + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release(caller_id)

        async def held() -> AsyncGenerator[T, None]:
            try:
                async for item in stream:
                    yield item
            finally:
                release()
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

        wrapped = held()
        weakref.finalize(wrapped, release)  # a stream never read has no finally to run
        return wrapped

    def _release(self, caller_id: str) -> None:
        count = self._open.get(caller_id, 0) - 1
        if count > 0:
            self._open[caller_id] = count
        else:
            self._open.pop(caller_id, None)
        for waiter in [waiter for waiter in self._waiters if self.open_for(waiter[0]) <= waiter[1]]:
            self._waiters.remove(waiter)
            if not waiter[2].done():
                waiter[2].set_result(None)

    async def wait_open_at_most(self, caller_id: str, count: int) -> None:
        """Wait until the caller has at most ``count`` streams open (for tests and tooling)."""
        if self.open_for(caller_id) <= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (caller_id, count, future)
        self._waiters.append(waiter)
        try:
            await future
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
