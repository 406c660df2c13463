"""Run events: numbered per run, persisted, streamed as Server-Sent Events.

The process executing a run numbers its events and buffers pipe progress in memory; a flusher writes the buffer
every ``FLUSH_INTERVAL`` seconds, and state changes write theirs in the same transaction as the change, so a short
run costs no extra write. Readers follow the store: woken at once by a local write, and by polling for runs that
execute in another process.

Events are keyed by the run's server-wide key; their data names the run by its public id. Nothing here outlives
the runs this process executes and the readers it serves: a run's log goes when its execution here ends, a reader's
waiter when the reader stops waiting (a Temporal-mode API process holds nothing for runs workers execute).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipelex_server.lifecycle import SHUTTING_DOWN
from pipelex_server.store.common import TERMINAL_STATES, Event, utcnow
from pipelex_server.store.runs import RunRepository

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2
POLL_INTERVAL = 0.5
FIRST_POLL_INTERVAL = 0.02  # events written by another process are polled for: soon after a change, then less often
KEEPALIVE_SECONDS = 15.0
END_EVENT = "end"


@dataclass
class _RunLog:
    next_seq: int
    public_id: str
    pending: list[Event] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Waiter:
    """Readers of one run waiting for this process's next write of its events."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    readers: int = 0


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class RunEvents:
    def __init__(self, repository: RunRepository) -> None:
        self.repository = repository
        self._logs: dict[str, _RunLog] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="event-flusher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for run_id in list(self._logs):
            with contextlib.suppress(Exception):
                await self.flush(run_id)

    # ---------------------------------------------------------------- writing (the executing process)

    @property
    def tracked(self) -> tuple[int, int]:
        """(runs whose events this process numbers, runs readers wait on here): both drop to 0 when idle."""
        return len(self._logs), len(self._waiters)

    def open(self, run_id: str, next_seq: int, public_id: str) -> None:
        """Start numbering the events of a run this process executes (``run_id`` is its key)."""
        self._logs.setdefault(run_id, _RunLog(next_seq=next_seq, public_id=public_id))

    def is_open(self, run_id: str) -> bool:
        return run_id in self._logs

    def _log(self, run_id: str) -> _RunLog:
        log = self._logs.get(run_id)
        if log is None:
            raise RuntimeError(f"the events of run {run_id} are not open in this process")
        return log

    def make(self, run_id: str, event: str, data: dict[str, Any]) -> Event:
        """Number an event now (to be written by the caller, with a state change)."""
        log = self._log(run_id)
        now = utcnow()
        record = {
            "seq": log.next_seq,
            "event": event,
            "data": {"pipeline_run_id": log.public_id, **data, "at": data.get("at") or _iso(now)},
            "at": now,
        }
        log.next_seq += 1
        return record

    def buffer(self, run_id: str, event: str, data: dict[str, Any]) -> None:
        """Progress from inside a run: numbered now, written by the flusher."""
        log = self._logs.get(run_id)
        if log is None:
            return
        log.pending.append(self.make(run_id, event, data))
        self._dirty.set()

    def take_pending(self, run_id: str) -> list[Event]:
        log = self._logs.get(run_id)
        if log is None:
            return []
        pending, log.pending = log.pending, []
        return pending

    def lock_for(self, run_id: str) -> asyncio.Lock:
        return self._log(run_id).lock

    def close_run(self, run_id: str) -> None:
        self._logs.pop(run_id, None)
        self.notify(run_id)

    async def flush(self, run_id: str) -> None:
        log = self._logs.get(run_id)
        if log is None or not log.pending:
            return
        async with log.lock:
            pending = self.take_pending(run_id)
            if pending:
                await self.repository.append_events(run_id, pending)
        self.notify(run_id)

    async def _flush_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await asyncio.sleep(FLUSH_INTERVAL)
            busy = await self._flush_free([run_id for run_id, log in self._logs.items() if log.pending])
            for run_id in busy:
                try:
                    await self.flush(run_id)
                except Exception:
                    logger.exception("writing the events of run %s failed", run_id)

    async def _flush_free(self, run_ids: list[str]) -> list[str]:
        """Write the pending events of those runs whose log no state change holds now, all in one transaction (one
        store hop for every run in flight, not one each). Returns the others, to be flushed one by one."""
        held: list[tuple[str, _RunLog]] = []
        busy: list[str] = []
        for run_id in run_ids:
            log = self._logs.get(run_id)
            if log is None or not log.pending:
                continue
            if log.lock.locked():
                busy.append(run_id)
                continue
            await log.lock.acquire()  # free: taken without yielding to the loop
            held.append((run_id, log))
        try:
            batch = {run_id: self.take_pending(run_id) for run_id, _log in held}
            if batch:
                try:
                    await self.repository.append_events_of(batch)
                except asyncio.CancelledError:  # shutting down: the batch rolled back; close() writes them run by run
                    for run_id, events in batch.items():
                        if (log := self._logs.get(run_id)) is not None:
                            log.pending[:0] = events
                    raise
                except Exception:  # one run's events must not cost the others theirs: each run on its own, as before
                    for run_id, events in batch.items():
                        try:
                            await self.repository.append_events(run_id, events)
                        except Exception:
                            logger.exception("writing the events of run %s failed", run_id)
        finally:
            for _run_id, log in held:
                log.lock.release()
        for run_id, _log in held:
            self.notify(run_id)
        return busy

    # ---------------------------------------------------------------- reading (any process)

    def notify(self, run_id: str) -> None:
        waiter = self._waiters.pop(run_id, None)
        if waiter is not None:
            waiter.event.set()

    async def _wait(self, run_id: str, timeout: float) -> None:
        waiter = self._waiters.get(run_id)
        if waiter is None:
            waiter = self._waiters[run_id] = _Waiter()
        waiter.readers += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), timeout)
        finally:  # also when the reader is cancelled (its client went away)
            waiter.readers -= 1
            if not waiter.readers and self._waiters.get(run_id) is waiter:
                del self._waiters[run_id]

    async def follow(self, run_id: str, after_seq: int, *, caller_id: str | None = None) -> AsyncIterator[Event | None]:
        """Yield the run's events after ``after_seq`` until its ``end`` event; None marks an idle keep-alive.

        Each time it finds nothing new, it checks the run again: the stream ends when the run is gone (deleted,
        purged) or no longer the caller's, and when the run has ended with no event after ``after_seq`` (a reader
        resuming at or past the last event is not kept waiting for events that will never come)."""
        last = after_seq
        idle = 0.0
        interval = FIRST_POLL_INTERVAL
        ended = False
        while True:
            events = await self.repository.events_after(run_id, last)
            for event in events:
                last = event["seq"]
                yield event
                if event["event"] == END_EVENT:
                    return
            if events:
                idle = 0.0
                interval = FIRST_POLL_INTERVAL
                continue
            if SHUTTING_DOWN.is_set():
                return
            row = await self.repository.get(run_id)
            if row is None or (caller_id is not None and row["caller_id"] != caller_id):
                return
            if row["state"] in TERMINAL_STATES:
                if ended:
                    return
                ended = True  # its last events were written with its terminal state: one more read finds them all
                continue
            await self._wait(run_id, interval)  # this process's own writes wake it at once
            idle += interval
            interval = min(POLL_INTERVAL, interval * 1.5)
            if idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                yield None


def numbered(public_id: str, seq: int, event: str, data: dict[str, Any]) -> Event:
    """An event numbered by the caller (a run's first events, written with its insertion)."""
    now = utcnow()
    return {"seq": seq, "event": event, "data": {"pipeline_run_id": public_id, **data, "at": data.get("at") or _iso(now)}, "at": now}


def sse_frame(event: Event) -> bytes:
    data = json.dumps(event["data"], separators=(",", ":"), ensure_ascii=False)
    return f"id: {event['seq']}\nevent: {event['event']}\ndata: {data}\n\n".encode()


SSE_KEEPALIVE = b": keep-alive\n\n"
