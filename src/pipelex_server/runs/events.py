"""Run events: numbered per run, persisted, streamed as Server-Sent Events.

The process executing a run numbers its events and buffers pipe progress in memory; a flusher writes the buffer
every ``FLUSH_INTERVAL`` seconds, and state changes write theirs in the same transaction as the change, so a short
run costs no extra write. Readers follow the store: woken at once by a local write, and by polling for runs that
execute in another process.
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
from pipelex_server.store.repository import Event, RunRepository, utcnow

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2
POLL_INTERVAL = 0.5
FIRST_POLL_INTERVAL = 0.02  # events written by another process are polled for: soon after a change, then less often
KEEPALIVE_SECONDS = 15.0
END_EVENT = "end"


@dataclass
class _RunLog:
    next_seq: int
    pending: list[Event] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class RunEvents:
    def __init__(self, repository: RunRepository) -> None:
        self.repository = repository
        self._logs: dict[str, _RunLog] = {}
        self._notify: dict[str, asyncio.Event] = {}
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

    def open(self, run_id: str, next_seq: int = 1) -> None:
        self._logs.setdefault(run_id, _RunLog(next_seq=next_seq))

    def make(self, run_id: str, event: str, data: dict[str, Any]) -> Event:
        """Number an event now (to be written by the caller, with a state change)."""
        log = self._logs.setdefault(run_id, _RunLog(next_seq=1))
        now = utcnow()
        record = {
            "seq": log.next_seq,
            "event": event,
            "data": {"pipeline_run_id": run_id, **data, "at": data.get("at") or _iso(now)},
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
        log = self._logs.setdefault(run_id, _RunLog(next_seq=1))
        return log.lock

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
            for run_id in [run_id for run_id, log in self._logs.items() if log.pending]:
                try:
                    await self.flush(run_id)
                except Exception:
                    logger.exception("writing the events of run %s failed", run_id)

    # ---------------------------------------------------------------- reading (any process)

    def notify(self, run_id: str) -> None:
        waiter = self._notify.pop(run_id, None)
        if waiter is not None:
            waiter.set()

    async def _wait(self, run_id: str, timeout: float) -> None:
        waiter = self._notify.setdefault(run_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout)

    async def follow(self, run_id: str, after_seq: int) -> AsyncIterator[Event | None]:
        """Yield the run's events after ``after_seq`` until its ``end`` event; None marks an idle keep-alive."""
        last = after_seq
        idle = 0.0
        interval = FIRST_POLL_INTERVAL
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
            if SHUTTING_DOWN.is_set() or await self.repository.get(run_id) is None:
                return
            await self._wait(run_id, interval)  # this process's own writes wake it at once
            idle += interval
            interval = min(POLL_INTERVAL, interval * 1.5)
            if idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                yield None


def numbered(run_id: str, seq: int, event: str, data: dict[str, Any]) -> Event:
    now = utcnow()
    return {"seq": seq, "event": event, "data": {"pipeline_run_id": run_id, **data, "at": data.get("at") or _iso(now)}, "at": now}


def sse_frame(event: Event) -> bytes:
    data = json.dumps(event["data"], separators=(",", ":"), ensure_ascii=False)
    return f"id: {event['seq']}\nevent: {event['event']}\ndata: {data}\n\n".encode()


SSE_KEEPALIVE = b": keep-alive\n\n"
