"""The run lifecycle: the one writer of run state.

A run is inserted STARTED, moves to RUNNING when it gets one of this process's slots, and ends in exactly one
terminal state. The process executing a run holds a lease on it and renews it; runs whose lease expired (their
process died) are settled by whichever process notices: re-queued if they never started, ERROR otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelex_server.engine.runtime import Engine, RunOutcome
from pipelex_server.errors import ApiProblem
from pipelex_server.settings import Settings
from pipelex_server.store.repository import TERMINAL_STATES, RunRepository, lease_deadline, utcnow

logger = logging.getLogger(__name__)


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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def run_document(row: dict[str, Any]) -> dict[str, Any]:
    """The public view of a run (contract §4)."""
    return {
        "pipeline_run_id": row["id"],
        "pipeline_state": row["state"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "pipe_code": row["pipe_code"],
        "main_stuff_name": row["main_stuff_name"],
        "pipe_output": row["output"] if row["state"] == "COMPLETED" else None,
        "output_url": row["output_url"],
        "error": row["error"],
        "usage": row["usage"],
        "dry_run": bool(row["dry_run"]),
        "workflow_id": row["workflow_id"],
        "callbacks": row["callbacks"] or [],
    }


def execute_answer(row: dict[str, Any]) -> dict[str, Any]:
    """The body of a 200 from /execute: the completed run, in the seed's response shape."""
    return {
        "pipeline_run_id": row["id"],
        "created_at": _iso(row["created_at"]),
        "pipeline_state": row["state"],
        "finished_at": _iso(row["finished_at"]),
        "main_stuff_name": row["main_stuff_name"],
        "pipe_output": row["output"],
        "usage": row["usage"],
        "dry_run": bool(row["dry_run"]),
    }


class RunService:
    def __init__(self, *, settings: Settings, repository: RunRepository, engine: Engine) -> None:
        self.settings = settings
        self.repository = repository
        self.engine = engine
        self.instance_id = uuid.uuid4().hex
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self._tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._closing = False

    # ---------------------------------------------------------------- lifecycle

    def start_background(self) -> None:
        self._background = [
            asyncio.create_task(self._renew_leases_forever(), name="lease-renewal"),
            asyncio.create_task(self._settle_expired_forever(), name="lease-sweeper"),
        ]

    async def close(self, grace_seconds: float = 10.0) -> None:
        self._closing = True
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        pending = [task for task in self._tasks.values() if not task.done()]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace_seconds)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)

    # ---------------------------------------------------------------- execute

    async def execute(self, *, caller: Caller, request: RunRequest, run_id: str | None, request_id: str | None) -> dict[str, Any]:
        """Run and wait. Returns the execute answer of a COMPLETED run, or raises the run's problem."""
        if not request.dry_run:
            self.engine.refuse_live_if_unconfigured()
        await self.engine.wait_ready()
        row = await self._create_or_replay(caller=caller, request=request, run_id=run_id, kind="execute")
        if row["state"] not in TERMINAL_STATES:
            task = self._tasks.get(row["id"])
            if task is None and row["lease_owner"] == self.instance_id and row["_created"]:
                task = self._spawn(row["id"], caller, request, request_id)
            if task is not None:
                # shield: a client that disconnects does not cancel the run; it goes on and is recorded.
                row = await asyncio.shield(task)
            else:
                row = await self._wait_terminal(row["id"])
        return self._answer(row, request_id=request_id)

    def _answer(self, row: dict[str, Any], *, request_id: str | None) -> dict[str, Any]:
        if row["state"] == "COMPLETED":
            return execute_answer(row)
        problem = ApiProblem.from_document(row["error"] or {"status": 500, "code": "run.lost", "detail": "The run ended."})
        problem.members["pipeline_run_id"] = row["id"]
        problem.members["pipeline_state"] = row["state"]
        raise problem

    async def _create_or_replay(self, *, caller: Caller, request: RunRequest, run_id: str | None, kind: str) -> dict[str, Any]:
        now = utcnow()
        run_id = run_id or str(uuid.uuid4())
        fingerprint = request.fingerprint()
        row = {
            "id": run_id,
            "caller_id": caller.id,
            "kind": kind,
            "state": "STARTED",
            "pipe_code": request.pipe_code,
            "request_hash": fingerprint,
            "request": request.to_json(),
            "dry_run": request.dry_run,
            "created_at": now,
            "updated_at": now,
            "callbacks": [{"url": url, "attempts": 0, "last_status": None, "delivered_at": None} for url in request.callback_urls],
            "lease_owner": self.instance_id,
            "lease_expires_at": lease_deadline(self.settings.lease_seconds),
        }
        if await self.repository.insert(row):
            return {
                **row,
                "started_at": None,
                "finished_at": None,
                "main_stuff_name": None,
                "output": None,
                "output_url": None,
                "error": None,
                "usage": None,
                "workflow_id": None,
                "_created": True,
            }
        existing = await self.repository.get(run_id)
        if existing is None or existing["caller_id"] != caller.id or existing["request_hash"] != fingerprint:
            raise ApiProblem(
                status=409,
                code="request.idempotency_conflict",
                detail=f"The run id {run_id!r} was already used for a different request.",
                params={"pipeline_run_id": run_id},
            )
        return {**existing, "_created": False}

    def _spawn(self, run_id: str, caller: Caller, request: RunRequest, request_id: str | None) -> asyncio.Task[dict[str, Any]]:
        task = asyncio.create_task(self._run(run_id, caller, request, request_id), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run_id, None))
        return task

    async def _run(self, run_id: str, caller: Caller, request: RunRequest, request_id: str | None) -> dict[str, Any]:
        async with self._slots:
            now = utcnow()
            await self.repository.update(run_id, from_states=("STARTED",), state="RUNNING", started_at=now, updated_at=now)
            values: dict[str, Any]
            try:
                outcome = await self._execute_with_timeout(caller, request, request_id)
                values = self._completed_values(outcome)
            except ApiProblem as problem:
                values = {"state": "FAILED", "error": problem.to_document(request_id=request_id)}
            except asyncio.CancelledError:
                values = {
                    "state": "ERROR" if self._closing else "CANCELLED",
                    "error": ApiProblem(
                        status=500 if self._closing else 409,
                        code="run.lost" if self._closing else "run.cancelled",
                        detail="The server shut down before the run finished." if self._closing else "The run was cancelled.",
                    ).to_document(request_id=request_id),
                }
                await self._finish(run_id, values)
                raise
            except Exception:
                logger.exception("run %s crashed", run_id)
                values = {
                    "state": "FAILED",
                    "error": ApiProblem(
                        status=500, code="runtime.unexpected", detail="The run hit an unexpected server error."
                    ).to_document(request_id=request_id),
                }
            return await self._finish(run_id, values)

    async def _execute_with_timeout(self, caller: Caller, request: RunRequest, request_id: str | None) -> RunOutcome:
        timeout = self.settings.run_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                return await self.engine.execute(
                    pipe_code=request.pipe_code,
                    mthds_contents=request.mthds_contents,
                    inputs=request.inputs,
                    output_name=request.output_name,
                    output_multiplicity=request.output_multiplicity,
                    dynamic_output_concept_ref=request.dynamic_output_concept_ref,
                    dry_run=request.dry_run,
                    scope=caller.scope,
                    request_id=request_id,
                )
        except TimeoutError as exc:
            raise ApiProblem(
                status=422,
                code="run.timed_out",
                detail=f"The run passed its time limit of {timeout:g} s (RUN_TIMEOUT_SECONDS) and was stopped.",
                params={"timeout_seconds": timeout},
            ) from exc

    @staticmethod
    def _completed_values(outcome: RunOutcome) -> dict[str, Any]:
        return {
            "state": "COMPLETED",
            "main_stuff_name": outcome.main_stuff_name,
            "output": outcome.pipe_output,
            "usage": outcome.usage,
        }

    async def _finish(self, run_id: str, values: dict[str, Any]) -> dict[str, Any]:
        now = utcnow()
        values = {**values, "finished_at": now, "updated_at": now, "lease_owner": None, "lease_expires_at": None}
        await self.repository.update(run_id, from_states=("STARTED", "RUNNING"), **values)
        row = await self.repository.get(run_id)
        if row is None:  # deleted meanwhile
            raise ApiProblem(status=404, code="run.not_found", detail=f"No run {run_id!r}.")
        return row

    async def _wait_terminal(self, run_id: str) -> dict[str, Any]:
        """Wait for a run executed elsewhere (another process, or a previous request) to end."""
        delay = 0.05
        while True:
            row = await self.repository.get(run_id)
            if row is None:
                raise ApiProblem(status=404, code="run.not_found", detail=f"No run {run_id!r}.")
            if row["state"] in TERMINAL_STATES:
                return row
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # ---------------------------------------------------------------- leases

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
        while True:
            try:
                await self.settle_expired()
            except Exception:
                logger.exception("settling expired runs failed")
            await asyncio.sleep(interval * (0.75 + random.random() / 2))  # noqa: S311 - jitter only

    async def settle_expired(self) -> list[str]:
        """Settle runs whose owner stopped renewing its lease. Never touches a run with a live lease."""
        now = utcnow()
        settled: list[str] = []
        for row in await self.repository.expired_runs(now):
            if row["state"] == "RUNNING":
                values = {
                    "state": "ERROR",
                    "finished_at": now,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "error": ApiProblem(
                        status=500,
                        code="run.lost",
                        detail="The process executing this run stopped (its lease expired) before the run finished.",
                    ).to_document(request_id=None),
                }
            else:
                values = {"lease_owner": self.instance_id, "lease_expires_at": lease_deadline(self.settings.lease_seconds)}
            if await self.repository.settle_expired(row["id"], now, values):
                settled.append(row["id"])
                if row["state"] == "STARTED":
                    await self._requeue(row["id"])
        return settled

    async def _requeue(self, run_id: str) -> None:
        row = await self.repository.get(run_id)
        if row is None or row["state"] != "STARTED":
            return
        caller = Caller(id=row["caller_id"])
        self._spawn(run_id, caller, RunRequest.from_json(row["request"]), None)

    # ---------------------------------------------------------------- reads

    async def get_document(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self.repository.get(run_id)
        if row is None or row["caller_id"] != caller.id:
            raise ApiProblem(status=404, code="run.not_found", detail=f"No run {run_id!r}.")
        return run_document(row)
