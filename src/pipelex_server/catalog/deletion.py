"""Erasing a method in the background: claim it (a conditional write, so a second delete is a 409), answer 202, then
cancel its active runs, wait for them to end, delete every run of it with its stored objects, then its examples,
versions and row. A restarted server resumes the erasures it finds claimed. The method's files stay as the caller's
content-addressed blobs, which other methods and runs may share."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pipelex_server.catalog import problems
from pipelex_server.catalog.ids import new_job_id
from pipelex_server.errors import ApiProblem
from pipelex_server.runs.model import Caller
from pipelex_server.store.common import TERMINAL_STATES

if TYPE_CHECKING:
    from pipelex_server.runs.service import RunService
    from pipelex_server.store.catalog import CatalogRepository

logger = logging.getLogger(__name__)
RUN_END_WAIT_SECONDS = 300.0  # how long the erasure waits for a cancelled run to end before it gives up (state: failed)
POLL_SECONDS = 0.2


class MethodEraser:
    def __init__(self, *, repository: CatalogRepository, runs: RunService) -> None:
        self.repository = repository
        self.runs = runs
        self._tasks: set[asyncio.Task[None]] = set()

    async def delete(self, caller: Caller, method_id: str) -> dict[str, Any]:
        """Claim the method's erasure and start it; the 202 body (`MethodDeletionAccepted`)."""
        job_id = new_job_id()
        if not await self.repository.claim_deletion(caller.id, method_id, job_id):
            row = await self.repository.get_method(caller.id, method_id)
            if row is None:
                raise problems.not_found(method_id)
            raise problems.being_deleted(method_id)
        self._start(caller.id, method_id)
        return {"method_id": method_id, "deletion_state": "pending", "deletion_job_id": job_id}

    def _start(self, caller_id: str, method_id: str) -> None:
        task = asyncio.create_task(self._erase(caller_id, method_id), name=f"erase-{method_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self) -> None:
        """Restart the erasures a previous process claimed and did not finish."""
        for row in await self.repository.pending_deletions():
            self._start(row["caller_id"], row["id"])

    async def wait_idle(self) -> None:
        """Wait for the erasures in progress (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _erase(self, caller_id: str, method_id: str) -> None:
        caller = Caller(caller_id)
        try:
            await self.repository.set_deletion_state(method_id, "in_progress")
            for public_id, state in await self.repository.run_ids_of(caller_id, method_id):
                if state not in TERMINAL_STATES:
                    await self._cancel(caller, public_id)
            for public_id, _state in await self.repository.run_ids_of(caller_id, method_id):
                await self._delete_run(caller, public_id)
            await self.repository.erase(method_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("erasing the method %s failed", method_id)
            await self.repository.set_deletion_state(method_id, "failed")

    async def _cancel(self, caller: Caller, public_id: str) -> None:
        try:
            await self.runs.cancel(caller=caller, run_id=public_id)
        except ApiProblem:
            pass  # it ended (or went) meanwhile

    async def _delete_run(self, caller: Caller, public_id: str) -> None:
        """Wait for the run to end (bounded), then delete it with its stored objects."""
        async with asyncio.timeout(RUN_END_WAIT_SECONDS):
            while True:
                try:
                    document = await self.runs.get_document(caller=caller, run_id=public_id)
                except ApiProblem:
                    return  # already gone
                if document["pipeline_state"] in TERMINAL_STATES:
                    break
                await asyncio.sleep(POLL_SECONDS)
        try:
            await self.runs.delete(caller=caller, run_id=public_id)
        except ApiProblem as problem:
            if problem.status != 404:
                raise
