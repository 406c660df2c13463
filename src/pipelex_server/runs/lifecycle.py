"""The one writer of run state and its events: the allowed transitions, and every change as a checked compare-and-set.

A run is inserted STARTED (or straight RUNNING when /execute takes a free slot at once), moves to RUNNING when it
gets a slot of this process or a Temporal worker, and ends in exactly one terminal state. Every change is checked
against ``TRANSITIONS``, then written as a compare-and-set in the store with the events it produces. The process
executing a run in-process holds a lease on it and renews it; a run whose lease expired (its process died) is
settled by whichever process notices: taken over to run again if it never started, ERROR otherwise.

A run belongs to its caller, who names it by its public id; internally it is known by its key (runs/ids.py):
``row["id"]`` is the key, ``row["public_id"]`` what answers, events and stored objects' paths show.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from pipelex_server.observability import metrics
from pipelex_server.runs.documents import cancelled_problem, iso, not_found, problem_document
from pipelex_server.runs.events import END_EVENT, RunEvents, numbered
from pipelex_server.store.common import ACTIVE_STATES, TERMINAL_STATES, Event, lease_deadline, utcnow
from pipelex_server.store.runs import RunRepository

logger = logging.getLogger(__name__)

# Where a run may go from each state. A write that sets no state keeps it (a self-transition).
TRANSITIONS: dict[str, frozenset[str]] = {
    # queued: gets a slot here (or a worker); stays queued when another process takes over its expired lease, or when
    # it is handed back at shutdown; ends without running when cancelled, when its Temporal submission fails, or when
    # its workflow settles it
    "STARTED": frozenset({"STARTED", "RUNNING", *TERMINAL_STATES}),
    # running: stays running when a retried Temporal attempt takes it over; queued again when handed back at shutdown;
    # ends when its execution ends, when cancelled, when its workflow settles it, or ERROR once its lease expired
    "RUNNING": frozenset({"RUNNING", "STARTED", *TERMINAL_STATES}),
    # an ended run never changes again
    **{state: frozenset() for state in TERMINAL_STATES},
}
CREATED_STATES = frozenset({"STARTED", "RUNNING"})


class IllegalTransition(RuntimeError):
    """A write the transition table does not allow (a bug: nothing is written)."""

    def __init__(self, from_state: str, to_state: str) -> None:
        super().__init__(f"a run cannot go from {from_state} to {to_state}")
        self.from_state = from_state
        self.to_state = to_state


def check_transition(from_states: Sequence[str], values: dict[str, Any]) -> None:
    """Raise ``IllegalTransition`` unless a run in any of ``from_states`` may take the state ``values`` sets."""
    for state in from_states:
        target = values.get("state", state)
        if target not in TRANSITIONS.get(state, frozenset()):
            raise IllegalTransition(state, target)


class RunLifecycle:
    def __init__(
        self,
        *,
        repository: RunRepository,
        events: RunEvents,
        instance_id: str,
        lease_seconds: float,
        on_end: Callable[[str], Awaitable[None]],
    ) -> None:
        self.repository = repository
        self.events = events
        self.instance_id = instance_id  # this process, as the owner of the leases it holds
        self.lease_seconds = lease_seconds
        self.on_end = on_end  # a run ended: its callbacks are due (in-process), or its workflow sends them (Temporal)
        # what else a completed run's end is told to (the platform's file records): best effort, never the run's failure
        self.end_listeners: list[Callable[[dict[str, Any]], Awaitable[None]]] = []

    async def _write(
        self,
        run_id: str,
        *,
        from_states: Sequence[str],
        values: dict[str, Any],
        events: Sequence[Any] = (),
        lease_owner: str | None = None,
        expired_before: datetime | None = None,
    ) -> bool:
        """Every change of a run's state: checked against ``TRANSITIONS``, then one compare-and-set on the run's state
        (and on its lease owner, with ``lease_owner``), written with its events. With ``expired_before`` it is a
        settlement: compared on the lease having expired, its ``(event, data)`` pairs numbered by the store."""
        check_transition(from_states, values)
        if expired_before is not None:
            return await self.repository.settle_expired(run_id, expired_before, values, events)
        return await self.repository.transition(run_id, from_states=from_states, values=values, events=events, lease_owner=lease_owner)

    async def create(
        self, row: dict[str, Any], *, events: Sequence[Event], callback_urls: Sequence[str], max_attempts: int, max_active: int
    ) -> bool:
        """Insert a new run with its first events and its callbacks' deliveries; False when its key, or its caller's
        public id, exists already. Raises ``ActiveRunLimit`` when the caller has ``max_active`` queued or running."""
        if row["state"] not in CREATED_STATES:
            raise IllegalTransition("(new)", row["state"])
        inserted = await self.repository.insert_run(
            row, events=events, callback_urls=callback_urls, max_attempts=max_attempts, max_active=max_active
        )
        if inserted:
            self.events.notify(row["id"])
            metrics.run_started(row.get("pipe_code"))
        return inserted

    async def open_events(self, row: dict[str, Any]) -> None:
        """Start numbering the events of a run this process takes on, after those already stored."""
        self.events.open(row["id"], next_seq=await self.repository.max_seq(row["id"]) + 1, public_id=row["public_id"])

    async def start(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """In-process: a queued run got a slot here. Returns it RUNNING, or None when it is no longer this process's
        queued run (cancelled or settled while it waited for the slot)."""
        run_id = row["id"]
        now = utcnow()
        started = await self._write(
            run_id,
            from_states=("STARTED",),
            values={"state": "RUNNING", "started_at": now},
            events=[self.events.make(run_id, "state", {"pipeline_state": "RUNNING"})],
            lease_owner=self.instance_id,
        )
        if not started:
            self.events.close_run(run_id)
            return None
        self.events.notify(run_id)
        return {**row, "state": "RUNNING", "started_at": now}

    async def start_attempt(self, run_id: str, now: datetime, data: dict[str, Any]) -> bool:
        """Temporal: a worker's attempt starts a queued run (``data``: its RUNNING event's)."""
        return await self._write(
            run_id,
            from_states=("STARTED",),
            values={"state": "RUNNING", "started_at": now, "lease_owner": self.instance_id},
            events=[self.events.make(run_id, "state", data)],
        )

    async def take_over(self, run_id: str, data: dict[str, Any]) -> None:
        """Temporal: a retried attempt takes over a RUNNING run (an earlier attempt was lost, or gave up for a retry).
        A run that ended meanwhile is left as it is: the attempt's end finds it ended."""
        await self._write(run_id, from_states=("RUNNING",), values={"lease_owner": self.instance_id})
        self.events.buffer(run_id, "state", data)

    async def finish(self, row: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """Write the terminal state with every event still buffered, then the state and end events. Returns the ended
        run (as it is stored, when something else ended it first)."""
        run_id = row["id"]
        now = utcnow()
        values = {**values, "finished_at": now, "lease_owner": None, "lease_expires_at": None}
        state = values["state"]
        if not self.events.is_open(run_id):
            await self.open_events(row)
        async with self.events.lock_for(run_id):
            events = self.events.take_pending(run_id)
            terminal: dict[str, Any] = {"pipeline_state": state}
            if values.get("error"):
                terminal["error"] = {"code": values["error"].get("code"), "detail": values["error"].get("detail")}
            if values.get("usage"):
                terminal["usage"] = {"tokens": values["usage"]["tokens"], "cost_usd": values["usage"]["cost_usd"]}
            events.append(self.events.make(run_id, "state", terminal))
            events.append(self.events.make(run_id, END_EVENT, {"pipeline_state": state}))
            written = await self._write(run_id, from_states=ACTIVE_STATES, values=values, events=events)
        self.events.close_run(run_id)
        if not written:  # ended by someone else meanwhile (a cancel of a queued run, a settlement)
            return await self.repository.get(run_id) or row
        metrics.run_finished(row, state, now)
        if (row.get("request") or {}).get("callback_urls"):
            await self.on_end(run_id)
        ended = {**row, **values}
        for listener in self.end_listeners:
            try:
                await listener(ended)
            except Exception:
                logger.warning("a listener of run %s's end failed", row.get("public_id"), exc_info=True)
        return ended

    async def hand_back(self, run_id: str) -> None:
        """On shutdown: put an unfinished run back in the queue, lease expired, for another process or a restart."""
        now = utcnow()
        with contextlib.suppress(Exception):
            await self._write(
                run_id,
                from_states=ACTIVE_STATES,
                values={"state": "STARTED", "started_at": None, "lease_owner": None, "lease_expires_at": now},
                events=[*self.events.take_pending(run_id), self.events.make(run_id, "state", {"pipeline_state": "STARTED"})],
            )
        self.events.close_run(run_id)

    async def cancel_queued(self, row: dict[str, Any]) -> bool:
        """End a run that has not started yet CANCELLED, where it stands (no process executes it)."""
        key = row["id"]
        next_seq = await self.repository.max_seq(key) + 1
        now = utcnow()
        data = {"pipeline_state": "CANCELLED", "at": iso(now)}
        done = await self._write(
            key,
            from_states=("STARTED",),
            values={"state": "CANCELLED", "error": cancelled_problem(), "finished_at": now, "lease_owner": None, "lease_expires_at": None},
            events=[numbered(row["public_id"], next_seq, "state", data), numbered(row["public_id"], next_seq + 1, END_EVENT, data)],
        )
        if done:
            metrics.run_finished(row, "CANCELLED", now)
            self.events.notify(key)
            await self.on_end(key)
        return done

    async def settle_expired(self, row: dict[str, Any], now: datetime) -> bool:
        """Settle a run whose owner stopped renewing its lease (unless it renewed it meanwhile): a running one ends
        ERROR; a queued one is taken over by this process, still queued, for the caller to run it."""
        run_id = row["id"]
        if row["state"] == "RUNNING":
            problem = problem_document(
                500, "run.lost", "The process executing this run stopped (its lease expired) before the run finished."
            )
            values = {"state": "ERROR", "finished_at": now, "lease_owner": None, "lease_expires_at": None, "error": problem}
            at, public_id = iso(now), row["public_id"]
            events = [
                ("state", {"pipeline_run_id": public_id, "pipeline_state": "ERROR", "error": {"code": "run.lost"}, "at": at}),
                (END_EVENT, {"pipeline_run_id": public_id, "pipeline_state": "ERROR", "at": at}),
            ]
        else:
            values = {"lease_owner": self.instance_id, "lease_expires_at": lease_deadline(self.lease_seconds)}
            events = []
        settled = await self._write(run_id, from_states=ACTIVE_STATES, values=values, events=events, expired_before=now)
        if settled and row["state"] != "STARTED":
            metrics.run_finished(row, "ERROR", now)
            self.events.notify(run_id)
            await self.on_end(run_id)
        return settled

    async def wait_ended(self, row: dict[str, Any]) -> dict[str, Any]:
        """Wait for a run executed elsewhere (another process, a worker, or a previous request) to end."""
        async for event in self.events.follow(row["id"], 0):
            if event is not None and event["event"] == END_EVENT:
                break
        current = await self.repository.get(row["id"])
        if current is None:
            raise not_found(row["public_id"])
        return current
