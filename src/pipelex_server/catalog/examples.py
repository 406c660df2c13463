"""A method's saved examples: create, list (oldest first), read, update (new inputs raise `input_revision` and clear
`latest_run_id`), delete, record a latest run (`stale` when the revision moved), and the build assistant's save
(`kept` into its own example at the revision it read, else `created`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pipelex_server.catalog import problems
from pipelex_server.catalog.ids import EXAMPLE_ID_PATTERN, new_example_id
from pipelex_server.catalog.service import BadCursor, CatalogService, page_limit
from pipelex_server.catalog.views import example_view
from pipelex_server.errors import ApiProblem
from pipelex_server.store.catalog import decode_position, encode_position
from pipelex_server.store.common import InvalidCursor, utcnow
from pipelex_server.store.examples import ExampleRepository

if TYPE_CHECKING:
    from pipelex_server.runs.model import Caller
    from pipelex_server.runs.service import RunService

MAX_EXAMPLE_BYTES = 256 * 1024  # one stored example: its inputs as JSON
DEFAULT_EXAMPLES_PAGE = 50


def _same(left: Any, right: Any) -> bool:
    """Equal JSON values, keys in any order; `3` and `3.0` differ."""

    def canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    return canonical(left) == canonical(right)


def _checked_inputs(inputs: Any) -> dict[str, Any]:
    if not isinstance(inputs, dict):
        raise problems.invalid("inputs", "`inputs` must be a JSON object.")
    size = len(json.dumps(inputs).encode())
    if size > MAX_EXAMPLE_BYTES:
        raise ApiProblem(
            status=413,
            code="request.too_large",
            detail=f"The example's inputs weigh {size} bytes, past the {MAX_EXAMPLE_BYTES} one example holds.",
            params={"field": "inputs", "limit": MAX_EXAMPLE_BYTES},
        )
    return inputs


def _run_not_found(run_id: str) -> ApiProblem:
    return ApiProblem(status=404, code="run.not_found", detail=f"No run {run_id!r} of this method.", params={"pipeline_run_id": run_id})


class ExampleService:
    def __init__(self, *, repository: ExampleRepository, catalog: CatalogService, runs: RunService) -> None:
        self.repository = repository
        self.catalog = catalog
        self.runs = runs

    async def _example(self, caller: Caller, method_id: str, example_id: str) -> dict[str, Any]:
        await self.catalog.live(caller, method_id)
        if len(example_id) > 64:
            raise problems.invalid("example_id", "An example id is at most 64 characters.")
        row = await self.repository.get(method_id, example_id) if EXAMPLE_ID_PATTERN.fullmatch(example_id) else None
        if row is None:
            raise problems.not_found(method_id, what=f"example {example_id!r} of the method", example_id=example_id)
        return row

    async def _check_run(self, caller: Caller, method_id: str, run_id: Any, field: str) -> str:
        """A run of this method in the caller's scope (404 `run.not_found` otherwise, nothing written)."""
        if not isinstance(run_id, str) or not run_id:
            raise problems.invalid(field, f"`{field}` must be a run id.")
        try:
            document = await self.runs.get_document(caller=caller, run_id=run_id)
        except ApiProblem as problem:
            if problem.status == 404:
                raise _run_not_found(run_id) from None
            raise
        if document.get("method_id") != method_id:
            raise _run_not_found(run_id)
        return run_id

    def _row(self, caller: Caller, method_id: str, *, name: str, inputs: dict[str, Any], assistant: bool) -> dict[str, Any]:
        now = utcnow()
        return {
            "id": new_example_id(),
            "method_id": method_id,
            "name": name,
            "inputs": inputs,
            "input_revision": 1,
            "latest_run_id": None,
            "kept_by_assistant": assistant,
            "created_by": caller.id,
            "created_at": now,
            "updated_at": now,
        }

    async def create(self, caller: Caller, method_id: str, *, name: Any, inputs: Any, run_id: Any = None) -> dict[str, Any]:
        name, inputs = problems.checked_name(name), _checked_inputs(inputs)
        await self.catalog.live(caller, method_id)
        row = self._row(caller, method_id, name=name, inputs=inputs, assistant=False)
        if run_id is not None:
            row["latest_run_id"] = await self._check_run(caller, method_id, run_id, "run_id")
        await self.repository.insert(row)
        return example_view(row)

    async def list(self, caller: Caller, method_id: str, *, limit: int | None, cursor: str | None) -> dict[str, Any]:
        from datetime import datetime

        await self.catalog.live(caller, method_id)
        after = None
        if cursor is not None:
            try:
                created, example_id = decode_position("examples:" + method_id, cursor, 2)
                after = (datetime.fromisoformat(created), str(example_id))
            except (InvalidCursor, TypeError, ValueError) as exc:
                raise BadCursor(cursor) from exc
        rows, position = await self.repository.list_oldest_first(method_id, limit=page_limit(limit, DEFAULT_EXAMPLES_PAGE), after=after)
        next_cursor = None
        if position is not None:
            next_cursor = encode_position("examples:" + method_id, position[0].isoformat(), position[1])
        return {"items": [example_view(row) for row in rows], "next_cursor": next_cursor}

    async def get(self, caller: Caller, method_id: str, example_id: str) -> dict[str, Any]:
        return example_view(await self._example(caller, method_id, example_id))

    async def update(self, caller: Caller, method_id: str, example_id: str, *, body: dict[str, Any]) -> dict[str, Any]:
        if "name" not in body and "inputs" not in body:
            raise problems.invalid("name", "Send a new `name`, new `inputs`, or both.")
        name = problems.checked_name(body["name"]) if "name" in body else None
        inputs = _checked_inputs(body["inputs"]) if "inputs" in body else None
        for _attempt in range(5):
            row = await self._example(caller, method_id, example_id)
            if inputs is not None and not _same(inputs, row["inputs"]):
                written = await self.repository.change_inputs(
                    method_id, example_id, name=name, inputs=inputs, revision=row["input_revision"]
                )
            elif name is not None:
                written = await self.repository.update(method_id, example_id, {"name": name})
            else:
                return example_view(row)
            if written:
                return await self.get(caller, method_id, example_id)
        raise problems.busy(method_id)

    async def delete(self, caller: Caller, method_id: str, example_id: str) -> None:
        await self._example(caller, method_id, example_id)
        if not await self.repository.delete(method_id, example_id):
            raise problems.not_found(method_id, what=f"example {example_id!r} of the method", example_id=example_id)

    async def record_latest_run(self, caller: Caller, method_id: str, example_id: str, *, run_id: Any, revision: Any) -> dict[str, Any]:
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
            raise problems.invalid("input_revision", "`input_revision` must be a positive integer.")
        await self._example(caller, method_id, example_id)
        run_id = await self._check_run(caller, method_id, run_id, "run_id")
        recorded = await self.repository.update(method_id, example_id, {"latest_run_id": run_id}, revision=revision)
        example = await self.get(caller, method_id, example_id)
        return {"outcome": "recorded" if recorded else "stale", "example": example}

    async def assistant_save(self, caller: Caller, method_id: str, *, body: dict[str, Any]) -> dict[str, Any]:
        name, inputs = problems.checked_name(body.get("name")), _checked_inputs(body.get("inputs"))
        example_id, revision = body.get("example_id"), body.get("input_revision")
        if (example_id is None) != (revision is None):
            raise problems.invalid("example_id", "Name the assistant's example by both `example_id` and `input_revision`, or neither.")
        await self.catalog.live(caller, method_id)
        if example_id is not None:
            if not isinstance(example_id, str) or isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
                raise problems.invalid("input_revision", "`example_id` must be an id and `input_revision` a positive integer.")
            current = await self.repository.get(method_id, example_id) if EXAMPLE_ID_PATTERN.fullmatch(example_id) else None
            if current is not None and current["kept_by_assistant"]:
                if current["input_revision"] == revision and _same(current["inputs"], inputs):
                    return {"outcome": "kept", "example": example_view(current)}
                if current["input_revision"] == revision + 1 and _same(current["inputs"], inputs):
                    return {"outcome": "kept", "example": example_view(current)}  # the retry of a save that landed
                if await self.repository.keep_for_assistant(method_id, example_id, inputs=inputs, revision=revision):
                    return {"outcome": "kept", "example": await self.get(caller, method_id, example_id)}
        row = self._row(caller, method_id, name=name, inputs=inputs, assistant=True)
        await self.repository.insert(row)
        return {"outcome": "created", "example": example_view(row)}
