"""Runs and their events: insertion under the per-caller limit, compare-and-set state changes, leases, cancellation.

Every state change is a compare-and-set on the run's current state (and, for settlement, on its lease), so
several processes sharing one database never overwrite each other's decisions. A state change and the events it
produces are written in one transaction. Runs are keyed by their server-wide ``id``; a caller finds its runs by
``(caller_id, public_id)`` (``get_public``). The run lifecycle (runs/lifecycle.py) is the only writer of run state.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipelex_server.store.common import ACTIVE_STATES, TERMINAL_STATES, Event, newest_first, utcnow
from pipelex_server.store.tables import (
    deliveries,
    file_runs,
    file_uses,
    files,
    method_examples,
    methods,
    run_checkpoints,
    run_events,
    runs,
)
from pipelex_server.store.transactions import transact


class ActiveRunLimit(Exception):
    """The caller already has as many queued or running runs as it may have: the run was not inserted."""


# PostgreSQL advisory-lock namespace that serializes one caller's run insertions (its key's other half is the caller)
_ACTIVE_LOCK = 727275

# The hot paths' statements, built once: a prebuilt statement keeps its cache key (SQLAlchemy memoizes it on the
# object), so executing it finds its compiled form without building and hashing a new construct each time.
_LOCK_CALLER = sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:caller))")
_INSERT_RUN = sa.insert(runs)
_INSERT_EVENTS = sa.insert(run_events)
_INSERT_DELIVERIES = sa.insert(deliveries)
_RUN_COLUMNS = frozenset(runs.c.keys())
_CANCEL_REQUESTED = sa.select(runs.c.id).where(runs.c.id.in_(sa.bindparam("b_ids", expanding=True)), runs.c.cancel_requested.is_(True))


def _state_among(states: Sequence[str]) -> sa.ColumnElement[bool]:
    # equalities rather than IN: an IN's list is an "expanding" parameter, rendered into the SQL again at each execution
    return sa.or_(*(runs.c.state == state for state in states))


_COUNT_ACTIVE = (
    sa.select(sa.func.count()).select_from(runs).where(runs.c.caller_id == sa.bindparam("b_caller"), _state_among(ACTIVE_STATES))
)


@functools.cache
def _compare_and_set(from_states: tuple[str, ...], on_lease: bool) -> sa.Update:
    """The state change from ``from_states`` (and from the lease of ``b_lease``) of the run ``b_id``; the columns it
    sets are the other keys of the parameters it is executed with."""
    statement = sa.update(runs).where(runs.c.id == sa.bindparam("b_id"), _state_among(from_states))
    if on_lease:
        statement = statement.where(runs.c.lease_owner == sa.bindparam("b_lease"))
    return statement


class RunRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))

    # ---------------------------------------------------------------- runs

    async def insert_run(
        self,
        row: dict[str, Any],
        *,
        events: Sequence[Event] = (),
        callback_urls: Sequence[str] = (),
        max_attempts: int = 8,
        max_active: int | None = None,
    ) -> bool:
        """Insert a new run with its first events and pending deliveries; False when its key, or its caller's public id,
        exists already. With ``max_active``, raises ``ActiveRunLimit`` instead of inserting a caller's run beyond that
        many queued or running ones, counted in the store (so the limit holds across processes)."""
        caller_id = row["caller_id"]
        deliveries_rows = [
            {"run_id": row["id"], "position": index, "url": url, "attempts": 0, "max_attempts": max_attempts}
            for index, url in enumerate(callback_urls)
        ]

        def insert(connection: Connection) -> None:
            if max_active is not None and connection.dialect.name == "postgresql":
                # one caller's insertions one at a time, so two of them cannot both see room for one more run
                connection.execute(_LOCK_CALLER, {"space": _ACTIVE_LOCK, "caller": caller_id})
            # the insert comes first: on SQLite it takes the write lock, so the count below is up to date
            connection.execute(_INSERT_RUN, row)
            if max_active is not None and connection.execute(_COUNT_ACTIVE, {"b_caller": caller_id}).scalar_one() > max_active:
                raise ActiveRunLimit(caller_id)  # rolls the insert back
            _write_events(connection, row["id"], events)
            if deliveries_rows:
                connection.execute(_INSERT_DELIVERIES, deliveries_rows)

        try:
            await transact(self.engine, insert)
        except IntegrityError:
            return False
        return True

    async def count_active(self, caller_id: str) -> int:
        """The caller's runs queued or running (STARTED or RUNNING), in every process."""
        async with self.engine.connect() as connection:
            return int((await connection.execute(_COUNT_ACTIVE, {"b_caller": caller_id})).scalar_one())

    async def get(self, run_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            result = await connection.execute(sa.select(runs).where(runs.c.id == run_id))
            row = result.mappings().first()
        return dict(row) if row else None

    async def get_public(self, caller_id: str, public_id: str) -> dict[str, Any] | None:
        """The caller's run of that public id (another caller's run of the same id is not it)."""
        async with self.engine.connect() as connection:
            result = await connection.execute(sa.select(runs).where(runs.c.caller_id == caller_id, runs.c.public_id == public_id))
            row = result.mappings().first()
        return dict(row) if row else None

    async def transition(
        self,
        run_id: str,
        *,
        from_states: Sequence[str],
        values: dict[str, Any],
        events: Sequence[Event] = (),
        lease_owner: str | None = None,
    ) -> bool:
        """Compare-and-set a run's state; its events land in the same transaction, only if the update did."""
        if unknown := values.keys() - _RUN_COLUMNS:  # as ``.values()`` would: executed parameters that name no column are ignored
            raise sa.exc.CompileError(f"Unconsumed column names: {', '.join(sorted(unknown))}")
        statement = _compare_and_set(tuple(from_states), lease_owner is not None)
        params = {"b_id": run_id, "updated_at": utcnow(), **values}
        if lease_owner is not None:
            params["b_lease"] = lease_owner

        def change(connection: Connection) -> bool:
            if not connection.execute(statement, params).rowcount:
                return False
            _write_events(connection, run_id, events)
            return True

        return await transact(self.engine, change)

    async def update(self, run_id: str, **values: Any) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(sa.update(runs).where(runs.c.id == run_id).values(updated_at=utcnow(), **values))

    async def list_runs(
        self, *, caller_id: str, state: str | None, pipe_code: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        statement = sa.select(runs).where(runs.c.caller_id == caller_id)
        if state:
            statement = statement.where(runs.c.state == state)
        if pipe_code:
            statement = statement.where(runs.c.pipe_code == pipe_code)
        return await newest_first(self.engine, statement, runs, limit, cursor)

    async def delete_terminal(self, run_id: str) -> bool:
        async with self.engine.begin() as connection:
            found = (
                await connection.execute(
                    sa.select(runs.c.caller_id, runs.c.public_id).where(runs.c.id == run_id, runs.c.state.in_(TERMINAL_STATES))
                )
            ).first()
            await connection.execute(sa.delete(run_events).where(run_events.c.run_id == run_id))
            await connection.execute(sa.delete(deliveries).where(deliveries.c.run_id == run_id))
            await connection.execute(sa.delete(run_checkpoints).where(run_checkpoints.c.run_id == run_id))
            result = await connection.execute(sa.delete(runs).where(runs.c.id == run_id, runs.c.state.in_(TERMINAL_STATES)))
            if result.rowcount and found is not None:
                await _forget_platform_records(connection, [(run_id, found.caller_id, found.public_id)])
        return bool(result.rowcount)

    async def purge_terminal_before(self, cutoff: datetime, limit: int = 500) -> list[tuple[str, str, str]]:
        """Delete terminal runs that finished before ``cutoff``; returns their (id, caller_id, public_id)."""
        async with self.engine.begin() as connection:
            found = [
                (row.id, row.caller_id, row.public_id)
                for row in await connection.execute(
                    sa.select(runs.c.id, runs.c.caller_id, runs.c.public_id)
                    .where(runs.c.state.in_(TERMINAL_STATES), runs.c.finished_at < cutoff)
                    .limit(limit)
                )
            ]
            ids = [run_id for run_id, _caller, _public in found]
            if ids:
                await connection.execute(sa.delete(run_events).where(run_events.c.run_id.in_(ids)))
                await connection.execute(sa.delete(deliveries).where(deliveries.c.run_id.in_(ids)))
                await connection.execute(sa.delete(run_checkpoints).where(run_checkpoints.c.run_id.in_(ids)))
                await connection.execute(sa.delete(runs).where(runs.c.id.in_(ids)))
                await _forget_platform_records(connection, found)
        return found

    # ---------------------------------------------------------------- cancellation

    async def request_cancel(self, run_id: str) -> bool:
        async with self.engine.begin() as connection:
            result = await connection.execute(
                sa.update(runs)
                .where(runs.c.id == run_id, runs.c.state.in_(ACTIVE_STATES))
                .values(cancel_requested=True, updated_at=utcnow())
            )
        return bool(result.rowcount)

    async def cancel_requested_among(self, run_ids: Sequence[str]) -> list[str]:
        if not run_ids:
            return []
        # polled twice a second while runs execute: one store hop, and a statement built once
        parameters = {"b_ids": list(run_ids)}
        return await transact(self.engine, lambda connection: list(connection.execute(_CANCEL_REQUESTED, parameters).scalars()))

    # ---------------------------------------------------------------- leases

    async def renew_leases(self, owner: str, run_ids: Sequence[str], until: datetime) -> int:
        if not run_ids:
            return 0
        async with self.engine.begin() as connection:
            result = await connection.execute(
                sa.update(runs)
                .where(runs.c.id.in_(list(run_ids)), runs.c.lease_owner == owner, runs.c.state.in_(ACTIVE_STATES))
                .values(lease_expires_at=until)
            )
        return int(result.rowcount or 0)

    async def expired_runs(self, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(runs.c.id, runs.c.public_id, runs.c.state, runs.c.lease_owner, runs.c.lease_expires_at)
                .where(runs.c.state.in_(ACTIVE_STATES), runs.c.lease_expires_at < now)
                .order_by(runs.c.created_at)
                .limit(limit)
            )
            return [dict(row) for row in result.mappings()]

    async def settle_expired(
        self, run_id: str, now: datetime, values: dict[str, Any], events: Sequence[tuple[str, dict[str, Any]]] = ()
    ) -> bool:
        """Settle a run whose lease expired, unless its owner renewed it meanwhile (compare-and-set on the lease)."""
        async with self.engine.begin() as connection:
            result = await connection.execute(
                sa.update(runs)
                .where(runs.c.id == run_id, runs.c.state.in_(ACTIVE_STATES), runs.c.lease_expires_at < now)
                .values(updated_at=now, **values)
            )
            if not result.rowcount:
                return False
            if events:
                first = await self._max_seq(connection, run_id) + 1
                numbered = [{"seq": first + index, "event": name, "data": data, "at": now} for index, (name, data) in enumerate(events)]
                await self._insert_events(connection, run_id, numbered)
        return True

    # ---------------------------------------------------------------- events

    async def append_events(self, run_id: str, events: Sequence[Event]) -> None:
        if events:
            await transact(self.engine, lambda connection: _write_events(connection, run_id, events))

    async def append_events_of(self, batch: Mapping[str, Sequence[Event]]) -> None:
        """The events of several runs in one transaction (the flusher's: one store hop for every run in flight)."""
        if any(batch.values()):
            await transact(self.engine, lambda connection: _write_events_of(connection, batch))

    async def events_after(self, run_id: str, after_seq: int, limit: int = 500) -> list[Event]:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(run_events.c.seq, run_events.c.event, run_events.c.data, run_events.c.at)
                .where(run_events.c.run_id == run_id, run_events.c.seq > after_seq)
                .order_by(run_events.c.seq)
                .limit(limit)
            )
            return [dict(row) for row in result.mappings()]

    async def max_seq(self, run_id: str) -> int:
        async with self.engine.connect() as connection:
            return await self._max_seq(connection, run_id)

    @staticmethod
    async def _max_seq(connection: AsyncConnection, run_id: str) -> int:
        result = await connection.execute(sa.select(sa.func.max(run_events.c.seq)).where(run_events.c.run_id == run_id))
        return int(result.scalar_one() or 0)

    @staticmethod
    async def _insert_events(connection: AsyncConnection, run_id: str, events: Sequence[Event]) -> None:
        if events:
            await connection.execute(_INSERT_EVENTS, [{"run_id": run_id, **event} for event in events])


def _write_events(connection: Connection, run_id: str, events: Sequence[Event]) -> None:
    _write_events_of(connection, {run_id: events})


def _write_events_of(connection: Connection, batch: Mapping[str, Sequence[Event]]) -> None:
    """The events of one or several runs (run id -> its events), in one statement."""
    rows = [{"run_id": run_id, **event} for run_id, events in batch.items() for event in events]
    if rows:
        connection.execute(_INSERT_EVENTS, rows)


async def _forget_platform_records(connection: AsyncConnection, removed: Sequence[tuple[str, str, str]]) -> None:
    """In the transaction that removes runs ((id, caller_id, public_id) each): the file records and uses of those runs,
    their recorded marks, and the examples' ``latest_run_id`` naming them (issue 14: DELETE and retention cover them).
    A run's files recorded concurrently with its removal are still removed later by ``forget_deleted_runs``."""
    if not removed:
        return
    pairs = [(caller_id, public_id) for _key, caller_id, public_id in removed]
    await connection.execute(sa.delete(files).where(sa.tuple_(files.c.caller_id, files.c.run_id).in_(pairs)))
    await connection.execute(
        sa.delete(file_uses).where(file_uses.c.holder_type == "run", sa.tuple_(file_uses.c.caller_id, file_uses.c.holder_id).in_(pairs))
    )
    await connection.execute(sa.delete(file_runs).where(file_runs.c.run_key.in_([key for key, _caller, _public in removed])))
    named = sa.select(methods.c.id).where(
        methods.c.id == method_examples.c.method_id, sa.tuple_(methods.c.caller_id, method_examples.c.latest_run_id).in_(pairs)
    )
    await connection.execute(
        sa.update(method_examples)
        .where(method_examples.c.latest_run_id.in_([public_id for _caller, public_id in pairs]), sa.exists(named))
        .values(latest_run_id=None)
    )
