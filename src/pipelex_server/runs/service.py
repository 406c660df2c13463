"""The run lifecycle: the one writer of run state.

A run is inserted STARTED (or straight RUNNING when a slot is free), moves to RUNNING when it gets one of this
process's ``MAX_CONCURRENT_RUNS`` slots, and ends in exactly one terminal state. Every change is a
compare-and-set in the store, written with the events it produces. The process executing a run holds a lease on
it and renews it; runs whose lease expired (their process died) are settled by whichever process notices:
re-queued if they never started, ERROR otherwise.

A run belongs to its caller, who names it by its public id; internally it is known by its key (runs/ids.py):
``row["id"]`` is the key, ``row["public_id"]`` what answers, events and stored objects' paths show.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import threading
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from pipelex_server.engine.runtime import Checkpoints, Engine, RunOutcome
from pipelex_server.errors import ApiProblem
from pipelex_server.input_limits import check_url_inputs
from pipelex_server.netguard import UrlRefused, check_url_shape, vet_url
from pipelex_server.runs.callbacks import CallbackDeliverer
from pipelex_server.runs.documents import execute_answer, iso, not_found, run_document, start_answer
from pipelex_server.runs.events import END_EVENT, RunEvents, numbered
from pipelex_server.runs.ids import new_public_id, new_run_key
from pipelex_server.runs.limits import StreamSlots, redelivery_limit, too_many_active
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectNotFound, ObjectStore, StorageUnavailable
from pipelex_server.storage.keys import output_key, run_prefix
from pipelex_server.store.repository import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    ActiveRunLimit,
    CheckpointRepository,
    Event,
    InvalidCursor,
    RunRepository,
    lease_deadline,
    utcnow,
)
from pipelex_server.temporal import workflow_id_for

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5
CANCEL_WAIT_SECONDS = 15.0
# A run's own time limit is final, whatever the failure inside it.
NOT_RETRYABLE_CODES = frozenset({"run.timed_out"})


class RetryableRunFailure(Exception):
    """The run failed in a way another attempt may fix; the run stays RUNNING (Temporal retries the activity)."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(f"{problem.get('code')}: {problem.get('detail')}")
        self.problem = problem


def is_retryable(problem: dict[str, Any] | None) -> bool:
    """Worth another attempt (Temporal mode): the runtime's registry says so (``retry: yes``: rate limits, provider
    outages and 5xx, provider timeouts); input, bundle and provider-refusal (4xx) failures are final."""
    if not problem:
        return False
    return problem.get("retry") == "yes" and str(problem.get("code") or "") not in NOT_RETRYABLE_CODES


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

    def with_rewritten_urls(self, rewrites: dict[str, str]) -> RunRequest:
        """The same request with the inputs' remote and data: URLs replaced by the storage URIs they were stored at."""
        if not rewrites:
            return self
        return replace(self, inputs=rewrite_urls(self.inputs, rewrites))

    def engine_arguments(self) -> dict[str, Any]:
        """What the engine needs to run it: everything but the callbacks, which are the run service's."""
        arguments = self.to_json()
        del arguments["callback_urls"]
        return arguments


def rewrite_urls(value: Any, rewrites: dict[str, str]) -> Any:
    """The JSON inputs with every ``"url"`` the resolution stored replaced by its storage URI."""
    if not rewrites:
        return value
    if isinstance(value, dict):
        return {
            key: (rewrites.get(item, item) if key == "url" and isinstance(item, str) else rewrite_urls(item, rewrites))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [rewrite_urls(item, rewrites) for item in value]
    return value


def _problem_document(status: int, code: str, detail: str) -> dict[str, Any]:
    return ApiProblem(status=status, code=code, detail=detail).to_document(request_id=None)


def _cancelled_problem() -> dict[str, Any]:
    return _problem_document(409, "run.cancelled", "The run was cancelled by its caller.")


class RunService:
    def __init__(self, *, settings: Settings, repository: RunRepository, engine: Engine, store: ObjectStore) -> None:
        self.settings = settings
        self.repository = repository
        self.engine = engine
        self.store = store
        self.checkpoints = CheckpointRepository(repository.engine)
        self.temporal: Any = None  # the Temporal client, in Temporal mode (set by the app or the worker)
        self.is_temporal = settings.is_temporal
        self.instance_id = uuid.uuid4().hex
        self.events = RunEvents(repository)
        self.streams = StreamSlots(settings.sse_max_streams_per_caller)
        self.deliverer = CallbackDeliverer(
            settings=settings, repository=repository, owner=self.instance_id, document_for=self._callback_document
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self._tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._shutting_down = False

    # ---------------------------------------------------------------- lifecycle

    def start_background(self, *, retention: bool = True) -> None:
        self.events.start()
        if self.is_temporal:
            # Temporal owns retries, cancellation and callback delivery: no leases, no sweeper, no delivery loop here
            self._background = []
        else:
            self.deliverer.start()
            self._background = [
                asyncio.create_task(self._renew_leases_forever(), name="lease-renewal"),
                asyncio.create_task(self._settle_expired_forever(), name="lease-sweeper"),
                asyncio.create_task(self._watch_cancellations_forever(), name="cancel-watch"),
            ]
        if retention and self.settings.run_retention_days:
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
        fingerprint = request.fingerprint()
        if not await self._is_replay(caller, run_id, fingerprint):
            await self._check_active(caller)
            if self.is_temporal:  # the worker gets a request that references storage only, as for /start
                run_id = run_id or new_public_id()
                request = await self._checked(caller, request, run_id, request_id)
        row, created = await self._create_or_replay(caller=caller, request=request, run_id=run_id, kind="execute", fingerprint=fingerprint)
        if row["state"] not in TERMINAL_STATES:
            if self.is_temporal:
                await self._submit(row, request)
            task = self._tasks.get(row["id"])
            if task is None and created and not self.is_temporal:
                task = self._spawn(row, caller, request, request_id)
            # shield: a client that disconnects does not cancel the run; it goes on and is recorded.
            row = await asyncio.shield(task) if task is not None else await self._wait_terminal(row)
        if row["state"] == "COMPLETED":
            if row["output"] is None and row["output_url"]:
                # /execute waits for the result: it gets the whole output even when the run document links it
                row = {**row, "output": json.loads(await self.output_bytes(row))}
            return execute_answer(row)
        problem = ApiProblem.from_document(row["error"] or _problem_document(500, "run.lost", "The run ended without a result."))
        problem.members["pipeline_run_id"] = row["public_id"]
        problem.members["pipeline_state"] = row["state"]
        raise problem

    async def start(self, *, caller: Caller, request: RunRequest, run_id: str | None, request_id: str | None) -> dict[str, Any]:
        """Check the bundle and inputs now (422 at once), then run in the background. Returns the 202 body."""
        await self._admit(request)
        fingerprint = request.fingerprint()
        # a retried request (same id, same body) is answered from its run: no second check, no second fetch
        stored = request if await self._is_replay(caller, run_id, fingerprint) else None
        if stored is None:
            await self._check_active(caller)  # before fetching anything for a request that would be refused
        run_id = run_id or new_public_id()
        stored = stored or await self._checked(caller, request, run_id, request_id)
        row, created = await self._create_or_replay(caller=caller, request=stored, run_id=run_id, kind="start", fingerprint=fingerprint)
        if self.is_temporal:
            if row["state"] not in TERMINAL_STATES:
                await self._submit(row, stored)  # also for a replay: a submission lost in a crash is made again
        elif created:
            self._spawn(row, caller, stored, request_id)
        return start_answer(row)

    async def _is_replay(self, caller: Caller, run_id: str | None, fingerprint: str) -> bool:
        """The id names this caller's run of this very request (an idempotent retry)."""
        if run_id is None:
            return False
        existing = await self.repository.get_public(caller.id, run_id)
        return existing is not None and existing["request_hash"] == fingerprint

    async def _check_active(self, caller: Caller) -> None:
        """429 at once when the caller is at its limit of queued or running runs (inserting checks it again, exactly)."""
        limit = self.settings.max_active_runs_per_caller
        if await self.repository.count_active(caller.id) >= limit:
            raise too_many_active(limit)

    async def _checked(self, caller: Caller, request: RunRequest, run_id: str, request_id: str | None) -> RunRequest:
        """Check the bundle and inputs as the run will (remote and data: inputs are stored under the run's prefix);
        returns the request to store, whose inputs reference storage only, so the run never fetches them again.
        A refused request leaves nothing stored behind (unless the id is an existing run of this caller's)."""
        try:
            rewrites = await self.engine.check(
                **request.engine_arguments(), scope=caller.scope, storage_scope=run_prefix(caller.scope, run_id), request_id=request_id
            )
        except BaseException:
            if await self.repository.get_public(caller.id, run_id) is None:
                await self._delete_stored(caller.id, run_id)
            raise
        return request.with_rewritten_urls(rewrites)

    async def temporal_health(self) -> str:
        try:
            await asyncio.wait_for(self.temporal.service_client.check_health(), 3)
        except Exception as exc:
            return f"failing: {type(exc).__name__}"
        return "ok"

    async def _submit(self, row: dict[str, Any], request: RunRequest) -> None:
        """Temporal mode: start the run's workflow (an already started one is left alone)."""
        from temporalio.exceptions import WorkflowAlreadyStartedError

        from pipelex_server.temporal.workflows import RUN_WORKFLOW, RunParams

        params = RunParams(
            run_id=row["id"],
            has_callbacks=bool(request.callback_urls),
            max_attempts=self.settings.temporal_max_attempts,
            run_timeout_seconds=self.settings.run_timeout_seconds,
            heartbeat_timeout_seconds=self.settings.temporal_heartbeat_timeout_seconds,
            callback_max_attempts=self.settings.callback_max_attempts,
            callback_backoff_seconds=self.settings.callback_backoff_seconds,
        )
        try:
            await self.temporal.start_workflow(RUN_WORKFLOW, params, id=row["workflow_id"], task_queue=self.settings.temporal_task_queue)
        except WorkflowAlreadyStartedError:
            return
        except Exception as exc:
            logger.exception("could not submit run %s to Temporal", row["id"])
            problem = _problem_document(503, "temporal.unavailable", "The run could not be submitted to Temporal.")
            await self._finish(row, {"state": "ERROR", "error": problem})
            raise ApiProblem(
                status=503,
                code="temporal.unavailable",
                detail="The run could not be submitted to Temporal; it ended ERROR. Try again later.",
                params={"pipeline_run_id": row["public_id"]},
            ) from exc

    async def _admit(self, request: RunRequest) -> None:
        check_url_inputs(request.inputs, max_urls=self.settings.fetch_max_urls)
        # the runtime answers nothing before it is ready: wait for it (bounded) before asking it anything
        await self.engine.wait_ready()
        if not request.dry_run:
            self.engine.refuse_live_if_unconfigured()
        if request.callback_urls:
            await self._check_callback_urls(request.callback_urls)

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
                await vet_url(url, allow_private=self.settings.callback_allow_private_hosts, resolver=self.deliverer.resolver)
            except UrlRefused as exc:
                raise ApiProblem(
                    status=422,
                    code="callback.url_refused",
                    detail=f"callback_urls[{index}] is refused: {exc}.",
                    location={"path": ["body", "callback_urls", index]},
                ) from exc

    async def _create_or_replay(
        self, *, caller: Caller, request: RunRequest, run_id: str | None, kind: str, fingerprint: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Insert the caller's run ``run_id`` (its public id), or return the caller's existing run of that id when it
        was made by this very request; another caller's run of the same id is another run, and is never seen here."""
        now = utcnow()
        public_id = run_id or new_public_id()
        key = new_run_key()
        fingerprint = fingerprint or request.fingerprint()
        # /execute takes a free slot right away (no suspension when one is free): inserted RUNNING, one write less.
        # /start answers STARTED (accepted) and the run moves to RUNNING in the background.
        slot = kind == "execute" and not self.is_temporal and not self._slots.locked()
        if slot:
            await self._slots.acquire()
        state = "RUNNING" if slot else "STARTED"
        row = {
            "id": key,
            "public_id": public_id,
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
            "lease_owner": None if self.is_temporal else self.instance_id,
            "lease_expires_at": None if self.is_temporal else lease_deadline(self.settings.lease_seconds),
            "cancel_requested": False,
            "workflow_id": workflow_id_for(key) if self.is_temporal else None,
            "redeliveries": 0,
        }
        first_events = [numbered(public_id, 1, "state", {"pipeline_state": "STARTED"})]
        if slot:
            first_events.append(numbered(public_id, 2, "state", {"pipeline_state": "RUNNING"}))
        try:
            inserted = await self.repository.insert_run(
                row,
                events=first_events,
                callback_urls=request.callback_urls,
                max_attempts=self.settings.callback_max_attempts,
                max_active=self.settings.max_active_runs_per_caller,
            )
        except BaseException as exc:
            if slot:
                self._slots.release()
            if isinstance(exc, ActiveRunLimit):
                await self._delete_stored(caller.id, public_id)  # what this request's check stored belongs to no run
                raise too_many_active(self.settings.max_active_runs_per_caller) from None
            raise
        if inserted:
            if not self.is_temporal:  # in Temporal mode a worker executes it: nothing of it is kept here
                self.events.open(key, next_seq=len(first_events) + 1, public_id=public_id)
            full = {
                **row,
                "finished_at": None,
                "main_stuff_name": None,
                "output": None,
                "output_url": None,
                "error": None,
                "usage": None,
                "_slot": slot,
            }
            self.events.notify(key)
            return full, True
        if slot:
            self._slots.release()
        existing = await self.repository.get_public(caller.id, public_id)
        if existing is None or existing["request_hash"] != fingerprint:
            if existing is None:
                await self._delete_stored(caller.id, public_id)  # what this request's check stored belongs to no run
            raise ApiProblem(
                status=409,
                code="request.idempotency_conflict",
                detail=f"The run id {public_id!r} was already used for a different request.",
                params={"pipeline_run_id": public_id},
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
            values = await self._execute(row, caller, request, request_id)
        except asyncio.CancelledError:
            if self._shutting_down:
                await self._hand_back(run_id)
                raise
            # cancelled by its caller: the run ends CANCELLED and the task returns it (waiters get the run, not an error)
            values = {"state": "CANCELLED", "error": _cancelled_problem()}
        finally:
            if holds_slot:
                self._slots.release()
        return await self._finish(row, values)

    async def _execute(
        self,
        row: dict[str, Any],
        caller: Caller,
        request: RunRequest,
        request_id: str | None,
        checkpoints: Checkpoints | None = None,
        remaining_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Execute the run; ``remaining_seconds`` is what is left of its time limit (all of it by default)."""
        run_id = row["id"]
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
            # a run re-queued at boot may get here before the runtime is up: it waits as long as the boot takes
            await self.engine.wait_ready(timeout=math.inf)
            async with asyncio.timeout(timeout if remaining_seconds is None else remaining_seconds):
                outcome = await self.engine.execute(
                    **request.engine_arguments(),
                    scope=caller.scope,
                    storage_scope=run_prefix(caller.scope, row["public_id"]),
                    request_id=request_id,
                    progress=progress,
                    checkpoints=checkpoints,
                )
            return await self._completed_values(row, caller, request, outcome)
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

    async def _completed_values(self, row: dict[str, Any], caller: Caller, request: RunRequest, outcome: RunOutcome) -> dict[str, Any]:
        run_id, public_id = row["id"], row["public_id"]
        values: dict[str, Any] = {"state": "COMPLETED", "main_stuff_name": outcome.main_stuff_name, "usage": outcome.usage}
        if outcome.input_rewrites:  # keep the stored request small: inputs now live in storage
            values["request"] = request.with_rewritten_urls(outcome.input_rewrites).to_json()
        encoded = json.dumps(outcome.pipe_output, separators=(",", ":"), ensure_ascii=False).encode()
        if len(encoded) <= self.settings.output_inline_max_bytes:
            values["output"] = outcome.pipe_output
            return values
        # too large to inline: kept in object storage, linked from the run document and the callbacks
        try:
            await self.store.put(output_key(caller.scope, public_id), encoded, content_type="application/json")
        except StorageUnavailable:
            logger.exception("could not store the output of run %s: it stays inline", run_id)
            values["output"] = outcome.pipe_output
            return values
        values["output"] = None
        values["output_url"] = f"/api/v1/runs/{public_id}/output"
        return values

    async def output_bytes(self, row: dict[str, Any]) -> bytes:
        """A completed run's output as JSON bytes, from the run row or from object storage."""
        if row["output"] is not None or not row["output_url"]:
            return json.dumps(row["output"], separators=(",", ":"), ensure_ascii=False).encode()
        try:
            stored = await self.store.get(output_key(row["caller_id"], row["public_id"]))
        except ObjectNotFound as exc:
            raise ApiProblem(status=500, code="run.lost", detail="The run's stored output is missing.") from exc
        except StorageUnavailable as exc:
            raise ApiProblem(status=503, code="storage.unavailable", detail="The server's object storage is unavailable.") from exc
        return stored.data

    async def output(self, *, caller: Caller, run_id: str) -> bytes:
        row = await self._owned(caller, run_id)
        if row["state"] != "COMPLETED":
            raise ApiProblem(
                status=409,
                code="run.not_completed",
                detail=f"The run has no output: it is {row['state']}.",
                params={"pipeline_run_id": row["public_id"], "pipeline_state": row["state"]},
            )
        return await self.output_bytes(row)

    async def _finish(self, row: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """Write the terminal state with every event still buffered, then the state and end events."""
        run_id = row["id"]
        now = utcnow()
        values = {**values, "finished_at": now, "lease_owner": None, "lease_expires_at": None}
        state = values["state"]
        if not self.events.is_open(run_id):
            await self._open_events(row)
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
        # in Temporal mode the workflow delivers the callbacks, with their own activity and retry policy
        if has_callbacks and not self.is_temporal and await self.repository.schedule_deliveries(run_id, utcnow()):
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

    async def _wait_terminal(self, row: dict[str, Any]) -> dict[str, Any]:
        """Wait for a run executed elsewhere (another process, or a previous request) to end."""
        async for event in self.events.follow(row["id"], 0):
            if event is not None and event["event"] == END_EVENT:
                break
        current = await self.repository.get(row["id"])
        if current is None:
            raise not_found(row["public_id"])
        return current

    # ---------------------------------------------------------------- reads

    async def _owned(self, caller: Caller, run_id: str) -> dict[str, Any]:
        """The caller's run of public id ``run_id``; 404 alike for an id no one uses and for another caller's."""
        row = await self.repository.get_public(caller.id, run_id)
        if row is None:
            raise not_found(run_id)
        return row

    async def get_document(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self._owned(caller, run_id)
        return run_document(row, await self.repository.deliveries_of(row["id"]))

    async def document_and_events(self, *, caller: Caller, run_id: str) -> tuple[dict[str, Any], list[Event]]:
        """The caller's run document and every event of the run so far (the /v1 progress snapshot)."""
        row = await self._owned(caller, run_id)
        events: list[Event] = []
        while page := await self.repository.events_after(row["id"], events[-1]["seq"] if events else 0):
            events += page
        return run_document(row, await self.repository.deliveries_of(row["id"])), events

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

    async def follow_events(self, *, caller: Caller, run_id: str, after_seq: int) -> AsyncGenerator[Event | None, None]:
        """The caller's run's events after ``after_seq`` (404 first when it has no such run), holding one of its
        SSE_MAX_STREAMS_PER_CALLER stream slots (429 when none is free) until the stream ends or is dropped."""
        row = await self._owned(caller, run_id)
        return self.streams.hold(caller.id, self.events.follow(row["id"], after_seq, caller_id=caller.id))

    async def _callback_document(self, run_id: str) -> dict[str, Any] | None:
        row = await self.repository.get(run_id)
        return run_document(row, await self.repository.deliveries_of(run_id)) if row else None

    # ---------------------------------------------------------------- cancel / delete / redeliver

    async def cancel(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self._owned(caller, run_id)
        key = row["id"]
        if row["state"] in TERMINAL_STATES:
            raise ApiProblem(
                status=409,
                code="run.already_ended",
                detail=f"The run already ended ({row['state']}).",
                params={"pipeline_run_id": run_id, "pipeline_state": row["state"]},
            )
        if self.is_temporal:
            return await self._cancel_workflow(caller, row)
        task = self._tasks.get(key)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 10)
        elif row["state"] == "STARTED" and await self._cancel_queued(row):
            pass
        else:
            await self.repository.request_cancel(key)  # executing in another process: it polls for this
        return await self.get_document(caller=caller, run_id=run_id)

    async def _cancel_workflow(self, caller: Caller, row: dict[str, Any]) -> dict[str, Any]:
        """Temporal mode: a queued run is cancelled in place; the workflow is cancelled, which reaches the running
        activity at its next heartbeat; then wait (bounded) for the run to end."""
        if row["state"] == "STARTED":
            await self._cancel_queued(row)
        try:
            await self.temporal.get_workflow_handle(row["workflow_id"]).cancel()
        except Exception:
            logger.warning("could not cancel the workflow of run %s", row["id"], exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_terminal(row), CANCEL_WAIT_SECONDS)
        return await self.get_document(caller=caller, run_id=row["public_id"])

    async def _cancel_queued(self, row: dict[str, Any]) -> bool:
        key = row["id"]
        next_seq = await self.repository.max_seq(key) + 1
        now = utcnow()
        data = {"pipeline_state": "CANCELLED", "at": iso(now)}
        done = await self.repository.transition(
            key,
            from_states=("STARTED",),
            values={"state": "CANCELLED", "error": _cancelled_problem(), "finished_at": now, "lease_owner": None, "lease_expires_at": None},
            events=[numbered(row["public_id"], next_seq, "state", data), numbered(row["public_id"], next_seq + 1, END_EVENT, data)],
        )
        if done:
            self.events.notify(key)
            if not self.is_temporal and await self.repository.schedule_deliveries(key, utcnow()):
                self.deliverer.wake()
        return done

    async def delete(self, *, caller: Caller, run_id: str) -> None:
        row = await self._owned(caller, run_id)
        if row["state"] not in TERMINAL_STATES or not await self.repository.delete_terminal(row["id"]):
            raise ApiProblem(
                status=409,
                code="run.not_terminal",
                detail="The run is still going; cancel it first, or wait for it to end.",
                params={"pipeline_run_id": run_id, "pipeline_state": row["state"]},
            )
        self.events.notify(row["id"])  # its readers here see it gone at once
        await self._delete_stored(row["caller_id"], run_id)

    async def _delete_stored(self, caller_id: str, public_id: str) -> None:
        """A run's stored data (fetched and relocated inputs, offloaded output) goes with it."""
        try:
            await self.store.delete_prefix(run_prefix(caller_id, public_id))
        except StorageUnavailable:
            logger.warning("could not delete the stored data of run %s of %s", public_id, caller_id, exc_info=True)

    async def redeliver(self, *, caller: Caller, run_id: str) -> dict[str, Any]:
        """Send the run's callbacks again, each with a fresh budget of attempts: at most CALLBACK_MAX_REDELIVERIES
        times per run, counted in the store."""
        row = await self._owned(caller, run_id)
        key = row["id"]
        if row["state"] not in TERMINAL_STATES:
            raise ApiProblem(status=409, code="run.not_terminal", detail="The run has not ended: there is nothing to deliver yet.")
        limit = self.settings.callback_max_redeliveries
        scheduled = await self.repository.grant_redelivery(
            key, utcnow(), extra_attempts=self.settings.callback_max_attempts, max_redeliveries=limit
        )
        if scheduled is None:
            raise redelivery_limit(limit)
        if not scheduled:
            raise ApiProblem(status=409, code="callback.none", detail="The run has no callback_urls.")
        if self.is_temporal:
            from pipelex_server.temporal.workflows import CALLBACKS_WORKFLOW, CallbackParams

            params = CallbackParams(
                run_id=key, max_attempts=self.settings.callback_max_attempts, backoff_seconds=self.settings.callback_backoff_seconds
            )
            workflow_id = f"{row['workflow_id'] or workflow_id_for(key)}-callbacks-{uuid.uuid4().hex[:12]}"
            await self.temporal.start_workflow(CALLBACKS_WORKFLOW, params, id=workflow_id, task_queue=self.settings.temporal_task_queue)
        else:
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
                at, public_id = iso(now), row["public_id"]
                events = [
                    ("state", {"pipeline_run_id": public_id, "pipeline_state": "ERROR", "error": {"code": "run.lost"}, "at": at}),
                    (END_EVENT, {"pipeline_run_id": public_id, "pipeline_state": "ERROR", "at": at}),
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
        await self._open_events(row)
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
        """Remove ended runs (with their events and deliveries) that finished more than RUN_RETENTION_DAYS ago;
        returns their public ids."""
        days = self.settings.run_retention_days
        if not days:
            return []
        purged: list[str] = []
        while batch := await self.repository.purge_terminal_before(utcnow() - timedelta(days=days)):
            for _key, caller_id, public_id in batch:
                await self._delete_stored(caller_id, public_id)
                purged.append(public_id)
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

    # ---------------------------------------------------------------- Temporal workers (activities)

    async def _open_events(self, row: dict[str, Any]) -> None:
        """Start numbering the events of a run this process takes on, after those already stored."""
        self.events.open(row["id"], next_seq=await self.repository.max_seq(row["id"]) + 1, public_id=row["public_id"])

    async def _flush_and_close(self, run_id: str, *extra: tuple[str, dict[str, Any]]) -> None:
        """Write the run's buffered events (and ``extra``) and stop tracking it here: another attempt takes it on."""
        for event, data in extra:
            self.events.buffer(run_id, event, data)
        await self.events.flush(run_id)
        self.events.close_run(run_id)

    async def execute_assigned(self, run_id: str, *, attempt: int, max_attempts: int, worker_shutdown: Any) -> str:
        """Execute a run a Temporal activity was given (``run_id`` is its key); returns its terminal state.

        Idempotent: a run already ended is left alone. A retried attempt takes the run over and skips the steps
        an earlier attempt checkpointed, within what is left of the run's time limit (counted from its first start).
        Raises ``RetryableRunFailure`` (the run stays RUNNING) for a failure another attempt may fix, while attempts
        remain; re-raises a cancellation (after ending the run CANCELLED, unless the worker is shutting down, in which
        case the run stays RUNNING for the next attempt)."""
        row = await self.repository.get(run_id)
        if row is None:
            return "GONE"
        if row["state"] in TERMINAL_STATES:
            return row["state"]
        await self._open_events(row)
        now = utcnow()
        if row["state"] == "STARTED":
            started = await self.repository.transition(
                run_id,
                from_states=("STARTED",),
                values={"state": "RUNNING", "started_at": now, "lease_owner": self.instance_id},
                events=[self.events.make(run_id, "state", {"pipeline_state": "RUNNING", "attempt": attempt, "worker": self.instance_id})],
            )
            if not started:
                self.events.close_run(run_id)
                current = await self.repository.get(run_id)
                if current is None or current["state"] in TERMINAL_STATES:
                    return current["state"] if current else "GONE"
                await self._open_events(current)
            else:
                row = {**row, "state": "RUNNING", "started_at": now}
        else:  # RUNNING: an earlier attempt was lost (worker killed) or gave up for a retry
            await self.repository.update(run_id, lease_owner=self.instance_id)
            self.events.buffer(run_id, "state", {"pipeline_state": "RUNNING", "attempt": attempt, "worker": self.instance_id})
        self.events.notify(run_id)
        limit = self.settings.run_timeout_seconds
        remaining = limit - (now - (row["started_at"] or now)).total_seconds()
        if remaining <= 0:
            problem = _problem_document(422, "run.timed_out", f"The run passed its time limit of {limit:g} s (RUN_TIMEOUT_SECONDS).")
            return (await self._finish(row, {"state": "FAILED", "error": problem}))["state"]
        saved = {key: checkpoint["data"] for key, checkpoint in (await self.checkpoints.of_run(run_id)).items()}

        async def save(key: str, pipe_code: str, data: dict[str, Any]) -> None:
            await self.checkpoints.put(run_id, key, pipe_code, data)

        request = RunRequest.from_json(row["request"])
        caller = Caller(id=row["caller_id"])
        try:
            checkpoints = Checkpoints(saved=saved, save=save)
            values = await self._execute(row, caller, request, None, checkpoints=checkpoints, remaining_seconds=remaining)
        except asyncio.CancelledError:
            if worker_shutdown():
                await self._flush_and_close(run_id)
                raise
            await asyncio.shield(self._finish(row, {"state": "CANCELLED", "error": _cancelled_problem()}))
            raise
        if values["state"] == "FAILED" and attempt < max_attempts and is_retryable(values.get("error")):
            error = values["error"]
            await self._flush_and_close(
                run_id,
                (
                    "state",
                    {"pipeline_state": "RUNNING", "retrying": True, "error": {"code": error.get("code"), "detail": error.get("detail")}},
                ),
            )
            raise RetryableRunFailure(error)
        final = await self._finish(row, values)
        return final["state"]

    async def settle_assigned(self, run_id: str, *, reason: str, detail: str) -> str:
        """End a run its workflow could not finish (cancelled before it started, attempts exhausted, timed out)."""
        row = await self.repository.get(run_id)
        if row is None:
            return "GONE"
        if row["state"] in TERMINAL_STATES:
            return row["state"]
        await self._open_events(row)
        if reason == "cancelled":
            values = {"state": "CANCELLED", "error": _cancelled_problem()}
        elif reason == "timed_out":
            problem = _problem_document(422, "run.timed_out", f"The run passed its time limit without finishing ({detail}).")
            values = {"state": "FAILED", "error": problem}
        else:
            problem = _problem_document(500, "run.lost", f"The run could not be completed by any attempt: {detail}")
            values = {"state": "ERROR", "error": problem}
        return (await self._finish(row, values))["state"]

    async def deliver_assigned(self, run_id: str) -> int:
        """One delivery attempt of each of the run's undelivered callbacks; returns how many still need one."""
        await self.repository.schedule_deliveries(run_id, utcnow())
        return await self.deliverer.deliver_run(run_id)
