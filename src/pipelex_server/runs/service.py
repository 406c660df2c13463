"""The run lifecycle: the one writer of run state.

A run is inserted STARTED (or straight RUNNING when a slot is free), moves to RUNNING when it gets one of this
process's ``MAX_CONCURRENT_RUNS`` slots, and ends in exactly one terminal state. Every change is a
compare-and-set in the store, written with the events it produces. The process executing a run holds a lease on
it and renews it; runs whose lease expired (their process died) are settled by whichever process notices:
re-queued if they never started, ERROR otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipelex_server.engine.runtime import Engine, RunOutcome
from pipelex_server.errors import ApiProblem
from pipelex_server.netguard import UrlRefused, check_url_shape, vet_url
from pipelex_server.runs.callbacks import CallbackDeliverer, delivery_record
from pipelex_server.runs.events import END_EVENT, RunEvents, numbered
from pipelex_server.settings import Settings
from pipelex_server.store.repository import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Event,
    InvalidCursor,
    RunRepository,
    lease_deadline,
    utcnow,
)

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5
RETENTION_SWEEP_SECONDS = 3600.0


@dataclass(frozen=True)
class Caller:
    """Who is asking. ``scope`` is the tenant segment used for runs, storage and the runtime's read scope."""

    id: str

    @property
    def scope(self) -> str:
        return self.id


@dataclass(frozen=True)
class RunRequest:
    """The pipeline part of an execute/start body, as plain JSON."""

    pipe_code: str | None
    mthds_contents: list[str] | None
    inputs: dict[str, Any] | None
    output_name: str | None
    output_multiplicity: Any
    dynamic_output_concept_ref: str | None
    dry_run: bool
    callback_urls: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "pipe_code": self.pipe_code,
            "mthds_contents": self.mthds_contents,
            "inputs": self.inputs,
            "output_name": self.output_name,
            "output_multiplicity": self.output_multiplicity,
            "dynamic_output_concept_ref": self.dynamic_output_concept_ref,
            "dry_run": self.dry_run,
            "callback_urls": self.callback_urls,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRequest:
        return cls(
            pipe_code=data.get("pipe_code"),
            mthds_contents=data.get("mthds_contents"),
            inputs=data.get("inputs"),
            output_name=data.get("output_name"),
            output_multiplicity=data.get("output_multiplicity"),
            dynamic_output_concept_ref=data.get("dynamic_output_concept_ref"),
            dry_run=bool(data.get("dry_run")),
            callback_urls=list(data.get("callback_urls") or []),
        )

    def fingerprint(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def engine_arguments(self) -> dict[str, Any]:
        """What the engine needs to run it: everything but the callbacks, which are the run service's."""
        arguments = self.to_json()
        del arguments["callback_urls"]
        return arguments


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def run_document(row: dict[str, Any], deliveries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The public view of a run (contract §4)."""
    return {
        "pipeline_run_id": row["id"],
        "pipeline_state": row["state"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "pipe_code": row["pipe_code"],
        "main_stuff_name": row["main_stuff_name"],
        "pipe_output": row["output"] if row["state"] == "COMPLETED" else None,
        "output_url": row["output_url"],
        "error": row["error"],
        "usage": row["usage"],
        "dry_run": bool(row["dry_run"]),
        "workflow_id": row["workflow_id"],
        "callbacks": [delivery_record(delivery) for delivery in deliveries or []],
    }


def execute_answer(row: dict[str, Any]) -> dict[str, Any]:
    """The body of a 200 from /execute: the completed run, in the seed's response shape."""
    return {
        "pipeline_run_id": row["id"],
        "created_at": iso(row["created_at"]),
        "pipeline_state": row["state"],
        "finished_at": iso(row["finished_at"]),
        "main_stuff_name": row["main_stuff_name"],
        "pipe_output": row["output"],
        "usage": row["usage"],
        "dry_run": bool(row["dry_run"]),
    }


def start_answer(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "pipeline_run_id": row["id"],
        "created_at": iso(row["created_at"]),
        "pipeline_state": row["state"],
        "finished_at": iso(row["finished_at"]),
        "main_stuff_name": row["main_stuff_name"],
        "pipe_output": row["output"] if row["state"] == "COMPLETED" else None,
        "workflow_id": row["workflow_id"],
    }


def not_found(run_id: str) -> ApiProblem:
    return ApiProblem(status=404, code="run.not_found", detail=f"No run {run_id!r}.", params={"pipeline_run_id": run_id})


def _problem_document(status: int, code: str, detail: str) -> dict[str, Any]:
    return ApiProblem(status=status, code=code, detail=detail).to_document(request_id=None)


class RunService:
    def __init__(self, *, settings: Settings, repository: RunRepository, engine: Engine) -> None:
        self.settings = settings
        self.repository = repository
        self.engine = engine
        self.instance_id = uuid.uuid4().hex
        self.events = RunEvents(repository)
        self.deliverer = CallbackDeliverer(
            settings=settings, repository=repository, owner=self.instance_id, document_for=self._callback_document
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self._tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._shutting_down = False

    # ---------------------------------------------------------------- lifecycle

    def start_background(self) -> None:
        self.events.start()
        self.deliverer.start()
        self._background = [
            asyncio.create_task(self._renew_leases_forever(), name="lease-renewal"),
            asyncio.create_task(self._settle_expired_forever(), name="lease-sweeper"),
            asyncio.create_task(self._watch_cancellations_forever(), name="cancel-watch"),
        ]
        if self.settings.run_retention_days:
            self._background.append(asyncio.create_task(self._purge_forever(), name="retention"))

    async def close(self, grace_seconds: float = 20.0) -> None:
        """Graceful stop: let running runs finish within the grace period; hand back the rest (re-queued)."""
        pending = [task for task in self._tasks.values() if not task.done()]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace_seconds)
            self._shutting_down = True
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=10)
        self._shutting_down = True
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.events.close()
        await self.deliverer.close()

    # ---------------------------------------------------------------- execute / start

    async def execute(self, *, caller: Caller, request: RunRequest, run_id: str | None, request_id: str | None) -> dict[str, Any]:
        """Run and wait. Returns the execute answer of a COMPLETED run, or raises the run's problem."""
        await self._admit(request)
        row, created = await self._create_or_replay(caller=caller, request=request, run_id=run_id, kind="execute")
        if row["state"] not in TERMINAL_STATES:
            task = self._tasks.get(row["id"])
            if task is None and created:
                task = self._spawn(row, caller, request, request_id)
            # shield: a client that disconnects does not cancel the run; it goes on and is recorded.
            row = await asyncio.shield(task) if task is not None else await self._wait_terminal(row["id"])
        if row["state"] == "COMPLETED":
            return execute_answer(row)
        problem = ApiProblem.from_document(row["error"] or _problem_document(500, "run.lost", "The run ended without a result."))
        problem.members["pipeline_run_id"] = row["id"]
        problem.members["pipeline_state"] = row["state"]
        raise problem

    async def start(self, *, caller: Caller, request: RunRequest, run_id: str | None, request_id: str | None) -> dict[str, Any]:
        """Check the bundle and inputs now (422 at once), then run in the background. Returns the 202 body."""
        await self._admit(request)
        await self.engine.check(**request.engine_arguments(), scope=caller.scope, request_id=request_id)
        row, created = await self._create_or_replay(caller=caller, request=request, run_id=run_id, kind="start")
        if created:
            self._spawn(row, caller, request, request_id)
        return start_answer(row)

    async def _admit(self, request: RunRequest) -> None:
        if not request.dry_run:
            self.engine.refuse_live_if_unconfigured()
        if request.callback_urls:
            await self._check_callback_urls(request.callback_urls)
        await self.engine.wait_ready()

    async def _check_callback_urls(self, urls: list[str]) -> None:
        if self.settings.completion_callback_secret is None:
            raise ApiProblem(
                status=422,
                code="callback.secret_missing",
                detail="callback_urls need COMPLETION_CALLBACK_SECRET on the server (to sign the callbacks); none is set.",
            )
        for index, url in enumerate(urls):
            try:
                check_url_shape(url)
                await vet_url(url, allow_private=self.settings.callback_allow_private_hosts)
            except UrlRefused as exc:
                raise ApiProblem(
                    status=422,
                    code="callback.url_refused",
                    detail=f"callback_urls[{index}] is refused: {exc}.",
                    location={"path": ["body", "callback_urls", index]},
                ) from exc

    async def _create_or_replay(self, *, caller: Caller, request: RunRequest, run_id: str | None, kind: str) -> tuple[dict[str, Any], bool]:
        now = utcnow()
        run_id = run_id or str(uuid.uuid4())
        fingerprint = request.fingerprint()
        # /execute takes a free slot right away (no suspension when one is free): inserted RUNNING, one write less.
        # /start answers STARTED (accepted) and the run moves to RUNNING in the background.
        slot = kind == "execute" and not self._slots.locked()
        if slot:
            await self._slots.acquire()
        state = "RUNNING" if slot else "STARTED"
        row = {
            "id": run_id,
            "caller_id": caller.id,
            "kind": kind,
            "state": state,
            "pipe_code": request.pipe_code,
            "request_hash": fingerprint,
            "request": request.to_json(),
            "dry_run": request.dry_run,
            "created_at": now,
            "updated_at": now,
            "started_at": now if slot else None,
            "lease_owner": self.instance_id,
            "lease_expires_at": lease_deadline(self.settings.lease_seconds),
            "cancel_requested": False,
        }
        first_events = [numbered(run_id, 1, "state", {"pipeline_state": "STARTED"})]
        if slot:
            first_events.append(numbered(run_id, 2, "state", {"pipeline_state": "RUNNING"}))
        try:
            inserted = await self.repository.insert_run(
                row, events=first_events, callback_urls=request.callback_urls, max_attempts=self.settings.callback_max_attempts
            )
        except BaseException:
            if slot:
                self._slots.release()
            raise
        if inserted:
            self.events.open(run_id, next_seq=len(first_events) + 1)
            full = {
                **row,
                "finished_at": None,
                "main_stuff_name": None,
                "output": None,
                "output_url": None,
                "error": None,
                "usage": None,
                "workflow_id": None,
                "_slot": slot,
            }
            self.events.notify(run_id)
            return full, True
        if slot:
            self._slots.release()
        existing = await self.repository.get(run_id)
        if existing is None or existing["caller_id"] != caller.id or existing["request_hash"] != fingerprint:
            raise ApiProblem(
                status=409,
                code="request.idempotency_conflict",
                detail=f"The run id {run_id!r} was already used for a different request.",
                params={"pipeline_run_id": run_id},
            )
        return existing, False

    def _spawn(self, row: dict[str, Any], caller: Caller, request: RunRequest, request_id: str | None) -> asyncio.Task[dict[str, Any]]:
        run_id = row["id"]
        task = asyncio.create_task(self._run(row, caller, request, request_id), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _task: self._tasks.pop(run_id, None))
        return task

    async def _run(self, row: dict[str, Any], caller: Caller, request: RunRequest, request_id: str | None) -> dict[str, Any]:
        run_id = row["id"]
        holds_slot = bool(row.get("_slot"))
        try:
            if not holds_slot:
                await self._slots.acquire()
                holds_slot = True
                now = utcnow()
                started = await self.repository.transition(
                    run_id,
                    from_states=("STARTED",),
                    values={"state": "RUNNING", "started_at": now},
                    events=[self.events.make(run_id, "state", {"pipeline_state": "RUNNING"})],
                    lease_owner=self.instance_id,
                )
                if not started:  # cancelled (or settled) while it waited for a slot
                    self.events.close_run(run_id)
                    current = await self.repository.get(run_id)
                    return current or row
                row = {**row, "state": "RUNNING", "started_at": now}
                self.events.notify(run_id)
            values = await self._execute(run_id, caller, request, request_id)
        except asyncio.CancelledError:
            if self._shutting_down:
                await self._hand_back(run_id)
                raise
            # cancelled by its caller: the run ends CANCELLED and the task returns it (waiters get the run, not an error)
            values = {"state": "CANCELLED", "error": _problem_document(409, "run.cancelled", "The run was cancelled by its caller.")}
        finally:
            if holds_slot:
                self._slots.release()
        return await self._finish(row, values)

    async def _execute(self, run_id: str, caller: Caller, request: RunRequest, request_id: str | None) -> dict[str, Any]:
        timeout = self.settings.run_timeout_seconds
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        usage_by_pipe: dict[str, dict[str, int]] = {}

        def record(event: str, data: dict[str, Any]) -> None:
            if event == "usage":  # folded into the pipe's pipe_finished event
                tokens = usage_by_pipe.setdefault(data.get("pipe_code") or "", {})
                for category, count in data["tokens"].items():
                    tokens[category] = tokens.get(category, 0) + count
                return
            if event in ("pipe_finished", "pipe_failed") and data.get("pipe_code") in usage_by_pipe:
                data = {**data, "usage": {"tokens": usage_by_pipe.pop(data["pipe_code"])}}
            self.events.buffer(run_id, event, data)

        def progress(event: str, data: dict[str, Any]) -> None:
            if threading.get_ident() == loop_thread:
                record(event, data)
            else:
                loop.call_soon_threadsafe(record, event, data)

        try:
            await self.engine.wait_ready()  # a run re-queued at boot may get here before the runtime is up
            async with asyncio.timeout(timeout):
                outcome = await self.engine.execute(
                    **request.engine_arguments(), scope=caller.scope, request_id=request_id, progress=progress
                )
            return self._completed_values(outcome)
        except TimeoutError:
            problem = ApiProblem(
                status=422,
                code="run.timed_out",
                detail=f"The run passed its time limit of {timeout:g} s (RUN_TIMEOUT_SECONDS) and was stopped.",
                params={"timeout_seconds": timeout},
            )
            return {"state": "FAILED", "error": problem.to_document(request_id=request_id)}
        except ApiProblem as problem:
            return {"state": "FAILED", "error": problem.to_document(request_id=request_id)}
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("run %s crashed", run_id)
            return {"state": "FAILED", "error": _problem_document(500, "runtime.unexpected", "The run hit an unexpected server error.")}

    @staticmethod
    def _completed_values(outcome: RunOutcome) -> dict[str, Any]:
        return {"state": "COMPLETED", "main_stuff_name": outcome.main_stuff_name, "output": outcome.pipe_output, "usage": outcome.usage}

    async def _finish(self, row: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """Write the terminal state with every event still buffered, then the state and end events."""
        run_id = row["id"]
        now = utcnow()
        values = {**values, "finished_at": now, "lease_owner": None, "lease_expires_at": None}
        state = values["state"]
        async with self.events.lock_for(run_id):
            events = self.events.take_pending(run_id)
            terminal: dict[str, Any] = {"pipeline_state": state}
            if values.get("error"):
                terminal["error"] = {"code": values["error"].get("code"), "detail": values["error"].get("detail")}
            if values.get("usage"):
                terminal["usage"] = {"tokens": values["usage"]["tokens"], "cost_usd": values["usage"]["cost_usd"]}
            events.append(self.events.make(run_id, "state", terminal))
            events.append(self.events.make(run_id, END_EVENT, {"pipeline_state": state}))
            written = await self.repository.transition(run_id, from_states=ACTIVE_STATES, values=values, events=events)
        self.events.close_run(run_id)
        if not written:  # ended by someone else meanwhile (a cancel of a queued run, a settlement)
            return await self.repository.get(run_id) or row
        has_callbacks = bool((row.get("request") or {}).get("callback_urls"))
        if has_callbacks and await self.repository.schedule_deliveries(run_id, utcnow()):
            self.deliverer.wake()
        return {**row, **values}

    async def _hand_back(self, run_id: str) -> None:
        """On shutdown: put an unfinished run back in the queue, lease expired, for another process or a restart."""
        now = utcnow()
        with contextlib.suppress(Exception):
            await self.repository.transition(
                run_id,
                from_states=ACTIVE_STATES,
                values={"state": "STARTED", "started_at": None, "lease_owner": None, "lease_expires_at": now},
                events=[*self.events.take_pending(run_id), self.events.make(run_id, "state", {"pipeline_state": "STARTED"})],
            )
        self.events.close_run(run_id)

    async def _wait_terminal(self, run_id: str) -> dict[str, Any]:
        """Wait for a run executed elsewhere (another process, or a previous request) to end."""
        async for event in self.events.follow(run_id, 0):
            if event is not None and event["event"] == END_EVENT:
                break
        row = await self.repository.get(run_id)
        if row is None:
            raise not_found(run_id)
        return row

    # ---------------------------------------------------------------- reads

    async def _owned(self, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self.repository.get(run_id)
        if row is None or row["caller_id"] != caller.id:
            raise not_found(run_id)
        return row

    async def get_document(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self._owned(caller, run_id)
        return run_document(row, await self.repository.deliveries_of(run_id))

    async def list_documents(
        self, *, caller: Caller, state: str | None, pipe_code: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        try:
            rows, next_cursor = await self.repository.list_runs(
                caller_id=caller.id, state=state, pipe_code=pipe_code, limit=limit, cursor=cursor
            )
        except InvalidCursor as exc:
            raise ApiProblem(status=422, code="request.invalid", detail="The cursor is not one this server gave.") from exc
        deliveries = await self.repository.deliveries_of_runs([row["id"] for row in rows])
        return {"runs": [run_document(row, deliveries.get(row["id"], [])) for row in rows], "next_cursor": next_cursor}

    async def follow_events(self, *, caller: Caller, run_id: str, after_seq: int) -> AsyncIterator[Event | None]:
        await self._owned(caller, run_id)
        return self.events.follow(run_id, after_seq)

    async def _callback_document(self, run_id: str) -> dict[str, Any] | None:
        row = await self.repository.get(run_id)
        return run_document(row, await self.repository.deliveries_of(run_id)) if row else None

    # ---------------------------------------------------------------- cancel / delete / redeliver

    async def cancel(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self._owned(caller, run_id)
        if row["state"] in TERMINAL_STATES:
            raise ApiProblem(
                status=409,
                code="run.already_ended",
                detail=f"The run already ended ({row['state']}).",
                params={"pipeline_run_id": run_id, "pipeline_state": row["state"]},
            )
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 10)
        elif row["state"] == "STARTED" and await self._cancel_queued(run_id):
            pass
        else:
            await self.repository.request_cancel(run_id)  # executing in another process: it polls for this
        return await self.get_document(caller=caller, run_id=run_id)

    async def _cancel_queued(self, run_id: str) -> bool:
        next_seq = await self.repository.max_seq(run_id) + 1
        problem = _problem_document(409, "run.cancelled", "The run was cancelled by its caller.")
        now = utcnow()
        events = [
            {
                "seq": next_seq,
                "event": "state",
                "data": {"pipeline_run_id": run_id, "pipeline_state": "CANCELLED", "at": iso(now)},
                "at": now,
            },
            {
                "seq": next_seq + 1,
                "event": END_EVENT,
                "data": {"pipeline_run_id": run_id, "pipeline_state": "CANCELLED", "at": iso(now)},
                "at": now,
            },
        ]
        done = await self.repository.transition(
            run_id,
            from_states=("STARTED",),
            values={"state": "CANCELLED", "error": problem, "finished_at": now, "lease_owner": None, "lease_expires_at": None},
            events=events,
        )
        if done:
            self.events.notify(run_id)
            if await self.repository.schedule_deliveries(run_id, utcnow()):
                self.deliverer.wake()
        return done

    async def delete(self, *, caller: Caller, run_id: str) -> None:
        row = await self._owned(caller, run_id)
        if row["state"] not in TERMINAL_STATES or not await self.repository.delete_terminal(run_id):
            raise ApiProblem(
                status=409,
                code="run.not_terminal",
                detail="The run is still going; cancel it first, or wait for it to end.",
                params={"pipeline_run_id": run_id, "pipeline_state": row["state"]},
            )

    async def redeliver(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self._owned(caller, run_id)
        if row["state"] not in TERMINAL_STATES:
            raise ApiProblem(status=409, code="run.not_terminal", detail="The run has not ended: there is nothing to deliver yet.")
        if not await self.repository.schedule_deliveries(run_id, utcnow(), reset=True, extra_attempts=self.settings.callback_max_attempts):
            raise ApiProblem(status=409, code="callback.none", detail="The run has no callback_urls.")
        self.deliverer.wake()
        return await self.get_document(caller=caller, run_id=run_id)

    # ---------------------------------------------------------------- background loops

    async def _renew_leases_forever(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.repository.renew_leases(self.instance_id, list(self._tasks), lease_deadline(self.settings.lease_seconds))
            except Exception:
                logger.exception("lease renewal failed")

    async def _settle_expired_forever(self) -> None:
        interval = self.settings.lease_seconds / 2
        await self.engine.ready.wait()  # re-queued runs execute at once: not before the runtime is up
        while True:
            try:
                await self.settle_expired()
            except Exception:
                logger.exception("settling expired runs failed")
            await asyncio.sleep(interval * (0.75 + random.random() / 2))  # noqa: S311 - jitter, not security

    async def settle_expired(self) -> list[str]:
        """Settle runs whose owner stopped renewing its lease. Never touches a run with a live lease."""
        now = utcnow()
        settled: list[str] = []
        for row in await self.repository.expired_runs(now):
            run_id = row["id"]
            if row["state"] == "RUNNING":
                problem = _problem_document(
                    500, "run.lost", "The process executing this run stopped (its lease expired) before the run finished."
                )
                values = {"state": "ERROR", "finished_at": now, "lease_owner": None, "lease_expires_at": None, "error": problem}
                at = iso(now)
                events = [
                    ("state", {"pipeline_run_id": run_id, "pipeline_state": "ERROR", "error": {"code": "run.lost"}, "at": at}),
                    (END_EVENT, {"pipeline_run_id": run_id, "pipeline_state": "ERROR", "at": at}),
                ]
            else:
                values = {"lease_owner": self.instance_id, "lease_expires_at": lease_deadline(self.settings.lease_seconds)}
                events = []
            if await self.repository.settle_expired(run_id, now, values, events):
                settled.append(run_id)
                if row["state"] == "STARTED":
                    await self._requeue(run_id)
                else:
                    self.events.notify(run_id)
                    if await self.repository.schedule_deliveries(run_id, utcnow()):
                        self.deliverer.wake()
        return settled

    async def _requeue(self, run_id: str) -> None:
        row = await self.repository.get(run_id)
        if row is None or row["state"] != "STARTED" or self._shutting_down:
            return
        self.events.open(run_id, next_seq=await self.repository.max_seq(run_id) + 1)
        self._spawn({**row, "_slot": False}, Caller(id=row["caller_id"]), RunRequest.from_json(row["request"]), None)

    async def _watch_cancellations_forever(self) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not self._tasks:
                continue
            try:
                for run_id in await self.repository.cancel_requested_among(list(self._tasks)):
                    task = self._tasks.get(run_id)
                    if task is not None:
                        task.cancel()
            except Exception:
                logger.exception("watching for cancellations failed")

    async def purge_expired(self) -> list[str]:
        """Remove ended runs (with their events and deliveries) that finished more than RUN_RETENTION_DAYS ago."""
        days = self.settings.run_retention_days
        if not days:
            return []
        purged: list[str] = []
        while batch := await self.repository.purge_terminal_before(utcnow() - timedelta(days=days)):
            purged += batch
        if purged:
            logger.info("purged %d runs older than %g days", len(purged), days)
        return purged

    async def _purge_forever(self) -> None:
        while True:
            try:
                await self.purge_expired()
            except Exception:
                logger.exception("retention purge failed")
            await asyncio.sleep(RETENTION_SWEEP_SECONDS)
