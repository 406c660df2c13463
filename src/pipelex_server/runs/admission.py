"""Everything decided before a run exists: the URL-input limit, the runtime's readiness, the live check, callback URL
checks, the per-caller limit of active runs, the bundle and input check, keeping a method tree's files as blobs, and the
idempotent create-or-replay."""

from __future__ import annotations

from typing import Any

from pipelex_server.engine.runtime import Engine
from pipelex_server.errors import ApiProblem
from pipelex_server.input_limits import check_url_inputs, url_count
from pipelex_server.netguard import Resolver, UrlRefused, check_url_shape, vet_url
from pipelex_server.runs.events import numbered
from pipelex_server.runs.executor import Executor
from pipelex_server.runs.ids import new_public_id, new_run_key
from pipelex_server.runs.lifecycle import RunLifecycle
from pipelex_server.runs.limits import too_many_active
from pipelex_server.runs.model import Caller, RunRequest
from pipelex_server.runs.stored import delete_stored
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectStore
from pipelex_server.storage.keys import run_prefix
from pipelex_server.store.common import utcnow
from pipelex_server.store.runs import ActiveRunLimit, RunRepository


class Admission:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        repository: RunRepository,
        lifecycle: RunLifecycle,
        executor: Executor,
        store: ObjectStore,
        resolver: Resolver,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.repository = repository
        self.lifecycle = lifecycle
        self.executor = executor
        self.store = store
        self.resolver = resolver

    async def for_execute(
        self, *, caller: Caller, request: RunRequest, run_id: str | None, request_id: str | None
    ) -> tuple[dict[str, Any], bool, RunRequest]:
        """Admit an /execute request: its run (created, or the caller's existing run of this very request), whether it
        was created, and the request it runs."""
        await self.admit(request)
        fingerprint = request.fingerprint()
        if not await self.is_replay(caller, run_id, fingerprint):

            async def check(public_id: str) -> RunRequest:
                # only a mode that checks (and fetches) before the run exists asks: refuse first a caller at its limit.
                # In-process, the insert's exact check is the only one, and nothing was fetched before it.
                await self.check_active(caller)
                checked, _crate = await self.checked(caller, request, public_id, request_id)
                return checked  # the run reports its crate at its end

            run_id, request = await self.executor.prepare_execute(run_id, request, check)
            await self.store_tree(caller, request)
        row, created = await self.create_or_replay(caller=caller, request=request, run_id=run_id, kind="execute", fingerprint=fingerprint)
        return row, created, request

    async def for_start(
        self, *, caller: Caller, request: RunRequest, run_id: str | None, request_id: str | None
    ) -> tuple[dict[str, Any], bool, RunRequest]:
        """Admit a /start request: the bundle and inputs are checked now (422 at once), the inputs stored."""
        await self.admit(request)
        fingerprint = request.fingerprint()
        # a retried request (same id, same body) is answered from its run: no second check, no second fetch
        stored = request if await self.is_replay(caller, run_id, fingerprint) else None
        if stored is None and (request.tree_files is not None or url_count(request.inputs)):
            # before fetching or storing anything for a request that would be refused; a request whose check fetches
            # and stores nothing skips this round trip: the insert's exact check refuses it just the same
            await self.check_active(caller)
        run_id = run_id or new_public_id()
        crate_fingerprint = None
        if stored is None:
            stored, crate_fingerprint = await self.checked(caller, request, run_id, request_id)
            await self.store_tree(caller, stored)
        row, created = await self.create_or_replay(
            caller=caller, request=stored, run_id=run_id, kind="start", fingerprint=fingerprint, crate_fingerprint=crate_fingerprint
        )
        return row, created, stored

    async def admit(self, request: RunRequest) -> None:
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
                await vet_url(url, allow_private=self.settings.callback_allow_private_hosts, resolver=self.resolver)
            except UrlRefused as exc:
                raise ApiProblem(
                    status=422,
                    code="callback.url_refused",
                    detail=f"callback_urls[{index}] is refused: {exc}.",
                    location={"path": ["body", "callback_urls", index]},
                ) from exc

    async def is_replay(self, caller: Caller, run_id: str | None, fingerprint: str) -> bool:
        """The id names this caller's run of this very request (an idempotent retry)."""
        if run_id is None:
            return False
        existing = await self.repository.get_public(caller.id, run_id)
        return existing is not None and existing["request_hash"] == fingerprint

    async def check_active(self, caller: Caller) -> None:
        """429 at once when the caller is at its limit of queued or running runs (inserting checks it again, exactly)."""
        limit = self.settings.max_active_runs_per_caller
        if await self.repository.count_active(caller.id) >= limit:
            raise too_many_active(limit)

    async def checked(self, caller: Caller, request: RunRequest, run_id: str, request_id: str | None) -> tuple[RunRequest, str | None]:
        """Check the bundle and inputs as the run will (remote and data: inputs are stored under the run's prefix);
        returns the request to store, whose inputs reference storage only, so the run never fetches them again, and
        the fingerprint of the crate the method loaded into (the /start answer carries it, as the official server's).
        A refused request leaves nothing stored behind (unless the id is an existing run of this caller's)."""
        try:
            checked = await self.engine.check(
                **request.engine_arguments(),
                scope=caller.scope,
                storage_scope=run_prefix(caller.scope, run_id),
                request_id=request_id,
                tree=request.tree_files,
            )
        except BaseException:
            if await self.repository.get_public(caller.id, run_id) is None:
                await delete_stored(self.store, caller.id, run_id)
            raise
        return request.with_rewritten_urls(checked.rewrites), checked.crate_fingerprint

    async def store_tree(self, caller: Caller, request: RunRequest) -> None:
        """Keep a method tree's files as the caller's blobs once the request is accepted, so the run reads exactly
        what was accepted wherever it executes (a blob already held is not written again)."""
        if request.tree_files is not None:
            await self.engine.store_method_tree(request.tree_files, scope=caller.scope)

    async def create_or_replay(
        self,
        *,
        caller: Caller,
        request: RunRequest,
        run_id: str | None,
        kind: str,
        fingerprint: str | None = None,
        crate_fingerprint: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Insert the caller's run ``run_id`` (its public id), or return the caller's existing run of that id when it
        was made by this very request; another caller's run of the same id is another run, and is never seen here."""
        now = utcnow()
        public_id = run_id or new_public_id()
        key = new_run_key()
        fingerprint = fingerprint or request.fingerprint()
        # /execute takes a free slot right away (no suspension when one is free): inserted RUNNING, one write less.
        # /start answers STARTED (accepted) and the run moves to RUNNING in the background.
        slot = kind == "execute" and await self.executor.claim_slot()
        row = {
            "id": key,
            "public_id": public_id,
            "caller_id": caller.id,
            "kind": kind,
            "state": "RUNNING" if slot else "STARTED",
            "pipe_code": request.pipe_code,
            "request_hash": fingerprint,
            "request": request.to_json(),
            "dry_run": request.dry_run,
            "created_at": now,
            "updated_at": now,
            "started_at": now if slot else None,
            "cancel_requested": False,
            "redeliveries": 0,
            "method_id": request.method_id,
            "method_version": request.method_version,
            "crate_fingerprint": crate_fingerprint,  # known from a /start's check; a run records its own at its end
            **self.executor.placement(key),
        }
        first_events = [numbered(public_id, 1, "state", {"pipeline_state": "STARTED"})]
        if slot:
            first_events.append(numbered(public_id, 2, "state", {"pipeline_state": "RUNNING"}))
        try:
            inserted = await self.lifecycle.create(
                row,
                events=first_events,
                callback_urls=request.callback_urls,
                max_attempts=self.settings.callback_max_attempts,
                max_active=self.settings.max_active_runs_per_caller,
            )
        except BaseException as exc:
            if slot:
                self.executor.release_slot()
            if isinstance(exc, ActiveRunLimit):
                await delete_stored(self.store, caller.id, public_id)  # what this request's check stored belongs to no run
                raise too_many_active(self.settings.max_active_runs_per_caller) from None
            raise
        if inserted:
            self.executor.adopt(key, next_seq=len(first_events) + 1, public_id=public_id)
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
            return full, True
        if slot:
            self.executor.release_slot()
        existing = await self.repository.get_public(caller.id, public_id)
        if existing is None or existing["request_hash"] != fingerprint:
            if existing is None:
                await delete_stored(self.store, caller.id, public_id)  # what this request's check stored belongs to no run
            raise ApiProblem(
                status=409,
                code="request.idempotency_conflict",
                detail=f"The run id {public_id!r} was already used for a different request.",
                params={"pipeline_run_id": public_id},
            )
        return existing, False
