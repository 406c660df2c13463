"""A run's files (``GET /v1/runs/{id}/files``, ``GET /v1/files?run_id=``): what went in, what came out, what was made
along the way, recorded once the run has ended.

The addresses are read off the run: its stored request's inputs and its output's working memory. An input stored under
the run's own prefix (a ``data:`` URL or a web link the server fetched) is an inline input and gets a record of the
run; an input given by address (an upload) is a use of that address. The main output's addresses are ``final``, the
other addresses of the working memory ``intermediate``. Recording is idempotent (``file_runs`` marks a recorded run):
a completed run is recorded as it ends (``record_ended``, the run lifecycle's end listener, in the process that ran it),
and a read of the run's files, or of the caller's file list, records the ended runs not recorded yet.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from pipelex_server.api.protocol.platform_problems import invalid_cursor, platform_problem
from pipelex_server.files import records
from pipelex_server.files.service import FileService, new_file_id
from pipelex_server.runs.model import Caller
from pipelex_server.runs.stored import output_bytes
from pipelex_server.storage import ObjectNotFound, StorageUnavailable
from pipelex_server.storage.keys import run_prefix
from pipelex_server.store.common import TERMINAL_STATES, utcnow
from pipelex_server.store.runs import RunRepository

logger = logging.getLogger(__name__)

SETTLE_BATCH = 20
# The caller's list records the runs that ended within this window (an older run is recorded when its files are read),
# and removes the records of deleted runs at most this often per caller and process (the list hides them meanwhile):
# both keep a list's cost independent of the length of the caller's history.
SETTLE_WINDOW = timedelta(days=7)
FORGET_INTERVAL_SECONDS = 300.0


def addresses(value: Any) -> Iterator[str]:
    """Every ``pipelex-storage://`` key in a JSON value, in walk order."""
    if isinstance(value, str):
        key = records.key_of(value)
        if key is not None:
            yield key
    elif isinstance(value, dict):
        for item in value.values():
            yield from addresses(item)
    elif isinstance(value, list):
        for item in value:
            yield from addresses(item)


def may_hold_files(ended: dict[str, Any]) -> bool:
    """Whether an ended run can have files to record: a storage address in its inputs or its inline output, or an
    output kept in object storage (read back to see)."""
    if ended.get("output") is None and ended.get("output_url"):
        return True
    inputs = (ended.get("request") or {}).get("inputs")
    return next(addresses(inputs), None) is not None or next(addresses(ended.get("output")), None) is not None


def run_not_found(run_id: str) -> Any:
    return platform_problem("run.not_found", detail=f"No run {run_id!r}.", params={"pipeline_run_id": run_id})


class RunFiles:
    def __init__(self, *, files: FileService, runs: RunRepository) -> None:
        self.files = files
        self.runs = runs
        self._forgotten_at: dict[str, float] = {}

    async def owned_run(self, caller: Caller, run_id: str) -> dict[str, Any]:
        row = await self.runs.get_public(caller.id, run_id)
        if row is None:
            raise run_not_found(run_id)
        return row

    def input_addresses(self, row: dict[str, Any]) -> list[tuple[str, str]]:
        """(input name, key) of every address the run's inputs hold, in order, without repeats."""
        inputs = (row.get("request") or {}).get("inputs") or {}
        seen: list[tuple[str, str]] = []
        for name, value in inputs.items() if isinstance(inputs, dict) else ():
            for key in addresses(value):
                if (name, key) not in seen:
                    seen.append((name, key))
        return seen

    async def _output(self, row: dict[str, Any]) -> tuple[Any, Any]:
        """(main output, whole working memory) of a completed run; (None, None) otherwise."""
        if row["state"] != "COMPLETED":
            return None, None
        try:
            output = json.loads(await output_bytes(self.files.store, row))
        except Exception:  # a lost output is the run's problem, not its file list's
            logger.warning("could not read the output of run %s to record its files", row["public_id"], exc_info=True)
            return None, None
        memory = (output or {}).get("working_memory") or {}
        main = (memory.get("root") or {}).get(row.get("main_stuff_name") or "")
        return main, memory

    async def settle(self, row: dict[str, Any]) -> None:
        """Record an ended run's files and uses, once."""
        if row["state"] not in TERMINAL_STATES or await self.files.repository.is_recorded(row["id"]):
            return
        scope, public_id = row["caller_id"], row["public_id"]
        own_prefix = run_prefix(scope, public_id) + "/"
        method_id, method_version = row.get("method_id"), row.get("method_version")
        now = utcnow()
        wanted: dict[str, tuple[str, str | None]] = {}  # key -> (kind, role)
        uses = []
        for input_name, key in self.input_addresses(row):
            if key.startswith(own_prefix):
                wanted.setdefault(key, ("uploaded", None))
            elif records.scope_of(key) == scope:
                uses.append(
                    {
                        "caller_id": scope,
                        "key": key,
                        "holder_type": "run",
                        "holder_id": public_id,
                        "input_name": input_name,
                        "method_id": method_id,
                        "created_at": now,
                    }
                )
        main, memory = await self._output(row)
        inputs = {key for _, key in self.input_addresses(row)}
        for key in addresses(main):
            if key not in inputs:
                wanted.setdefault(key, ("generated", "final"))
        for key in addresses(memory):
            if key not in inputs:
                wanted.setdefault(key, ("generated", "intermediate"))
        rows = []
        for key, (kind, role) in wanted.items():
            if records.scope_of(key) != scope:
                continue
            try:
                info = await self.files.store.head(key)
            except (ObjectNotFound, StorageUnavailable, ValueError):
                continue
            name = records.basename(key)
            rows.append(
                {
                    "id": new_file_id(),
                    "caller_id": scope,
                    "key": key,
                    "name": name,
                    "original_name": name,
                    "media_type": info.content_type or "application/octet-stream",
                    "size": info.size,
                    "sha256": None,
                    "kind": kind,
                    "role": role,
                    "surface": None,
                    "run_id": public_id,
                    "method_id": method_id,
                    "method_version": method_version,
                    "upload_id": None,
                    "created_at": row["finished_at"] or now,
                }
            )
        marker = {"run_key": row["id"], "caller_id": scope, "run_id": public_id, "recorded_at": now}
        await self.files.repository.record_run(marker, rows, uses)

    async def record_ended(self, ended: dict[str, Any]) -> None:
        """The run lifecycle's end listener: record a completed run's files as it ends (read back as stored)."""
        if ended.get("state") != "COMPLETED":
            return  # a failed or cancelled run made nothing: a read of its files records its inputs
        if not may_hold_files(ended):
            return  # nothing to record (most runs): no read back, no write on the run's path; a list marks it later
        row = await self.runs.get(ended["id"])
        if row is not None:
            await self.settle(row)

    async def settle_caller(self, caller: Caller) -> None:
        """Record the caller's recently ended runs not recorded yet (a bounded batch), and now and then forget the
        records of its deleted runs."""
        now = time.monotonic()
        if now - self._forgotten_at.get(caller.id, -FORGET_INTERVAL_SECONDS) >= FORGET_INTERVAL_SECONDS:
            if len(self._forgotten_at) > 10_000:
                self._forgotten_at.clear()
            self._forgotten_at[caller.id] = now
            await self.files.repository.forget_deleted_runs(caller.id)
        for row in await self.files.repository.unrecorded_runs(caller.id, utcnow() - SETTLE_WINDOW, SETTLE_BATCH):
            await self.settle(row)

    async def page(self, *, caller: Caller, base_url: str, run_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """One page of a run's files, each with its record and a fresh link."""
        row = await self.owned_run(caller, run_id)
        after_key = None
        if cursor is not None:
            (after_key,) = self.files.cursors.read(cursor, caller_id=caller.id, list_id=f"run-files:{run_id}", filters={})
            if not isinstance(after_key, str):
                raise invalid_cursor()
        empty = {"pipeline_run_id": run_id, "inputs": [], "outputs": [], "intermediates": [], "links": [], "next_cursor": None}
        if row["state"] not in TERMINAL_STATES:
            return {**empty, "state": "listing"}
        await self.settle(row)
        answer: dict[str, Any] = {**empty, "state": "listed"}
        own_prefix = run_prefix(row["caller_id"], row["public_id"]) + "/"
        if cursor is None:
            for input_name, key in self.input_addresses(row):
                if key.startswith(own_prefix):
                    continue
                held = await self.files.repository.by_key(caller.id, key) if records.scope_of(key) == caller.scope else []
                answer["inputs"].append(self._entry(caller, base_url, "input", key, held[0] if held else None, input_name))
        own, more = await self.files.repository.run_records(caller.id, run_id, limit=limit, after_key=after_key)
        for record_row in own:
            mark = "input" if record_row["role"] is None else record_row["role"]
            section = {"input": "inputs", "final": "outputs"}.get(mark, "intermediates")
            answer[section].append(self._entry(caller, base_url, mark, record_row["key"], record_row, None))
        if more and own:
            answer["next_cursor"] = self.files.cursors.issue(
                caller_id=caller.id, list_id=f"run-files:{run_id}", filters={}, position=[own[-1]["key"]]
            )
        return answer

    def _entry(
        self, caller: Caller, base_url: str, mark: str, key: str, row: dict[str, Any] | None, input_name: str | None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {"mark": mark, "input_name": input_name, "uri": records.uri_of(key), "file": None}
        if row is not None:
            link = self.files.signer.link(
                store=self.files.store,
                base_url=self.files.base_url(base_url),
                caller=caller.scope,
                key=key,
                name=row["name"],
                media_type=row["media_type"],
            )
            entry["file"] = {**records.record(row), "url": link.url, "url_expires_at": link.expires_at}
        return entry
