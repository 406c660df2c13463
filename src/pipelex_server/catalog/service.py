"""The catalog's methods: create, list, read (files as links), rename, write the draft, read versions, and resolve a
selector into the method tree a run or validation uses. Publishing is `publish.py`, erasure `deletion.py`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelex_server.catalog import problems
from pipelex_server.catalog.ids import DRAFT, Selector, new_method_id
from pipelex_server.catalog.links import FileLinks
from pipelex_server.catalog.views import iso, method_data, method_summary, version_summary
from pipelex_server.store.catalog import CatalogRepository, decode_position, encode_position, next_token
from pipelex_server.store.common import InvalidCursor

if TYPE_CHECKING:
    from pipelex_server.engine.method_tree_files import MethodTreeFiles
    from pipelex_server.engine.runtime import Engine
    from pipelex_server.runs.model import Caller

KEEP = object()  # `input_data` left out of a draft write: the stored form inputs are kept
DEFAULT_PAGE, MAX_PAGE = 20, 100


class BadCursor(ValueError):
    """A list cursor this server did not issue for this list (the route answers 400)."""


@dataclass(frozen=True)
class ResolvedMethod:
    """What a selector named: the tree to run, the bare id, and the version as the run records it ("3", "draft")."""

    tree: MethodTreeFiles
    method_id: str
    version: str


def tree_entries(tree: MethodTreeFiles) -> dict[str, dict[str, Any]]:
    return {path: {"sha256": tree.hashes[path], "size": len(data)} for path, data in sorted(tree.contents.items())}


def description_of(tree: MethodTreeFiles) -> str | None:
    """The top-level `description` of the first `.mthds` file (tree path order) that declares one."""
    for path in sorted(tree.contents):
        if not path.endswith(".mthds"):
            continue
        try:
            document = tomllib.loads(tree.contents[path].decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
            continue
        description = document.get("description")
        if isinstance(description, str) and description:
            return description
    return None


def page_limit(limit: int | None, default: int = DEFAULT_PAGE) -> int:
    if limit is None:
        return default
    if limit < 1 or limit > MAX_PAGE:
        raise problems.invalid("limit", f"`limit` must be from 1 to {MAX_PAGE}.")
    return limit


class CatalogService:
    def __init__(self, *, repository: CatalogRepository, engine: Engine, links: FileLinks) -> None:
        self.repository = repository
        self.engine = engine
        self.links = links

    # ---------------------------------------------------------------- reads

    async def live(self, caller: Caller, method_id: str) -> dict[str, Any]:
        """The caller's method, not being deleted: 404 for an unknown or another caller's id, 409 while it is erased."""
        row = await self.repository.get_method(caller.id, method_id)
        if row is None:
            raise problems.not_found(method_id)
        if row["deletion_state"] is not None:
            raise problems.being_deleted(method_id)
        return row

    async def _latest(self, row: dict[str, Any]) -> dict[str, Any] | None:
        return await self.repository.get_version(row["id"], row["latest_version"]) if row["latest_version"] else None

    async def data(self, row: dict[str, Any]) -> dict[str, Any]:
        return method_data(row, await self._latest(row))

    def files(self, entries: dict[str, Any] | None, *, scope: str, base_url: str) -> list[dict[str, Any]]:
        listed = []
        for path, entry in sorted((entries or {}).items()):
            url, expires_at = self.links.link(base_url, scope=scope, sha256=entry["sha256"])
            listed.append({"path": path, "sha256": entry["sha256"], "size": entry["size"], "url": url, "expires_at": expires_at})
        return listed

    async def get(self, caller: Caller, method_id: str, *, base_url: str) -> dict[str, Any]:
        row = await self.live(caller, method_id)
        return {**await self.data(row), "files": self.files(row["draft"], scope=caller.scope, base_url=base_url)}

    async def list(self, caller: Caller, *, q: str | None, published: bool | None, limit: int | None, cursor: str | None) -> dict[str, Any]:
        try:
            rows, next_cursor = await self.repository.list_methods(
                caller.id, q=q, published=published, limit=page_limit(limit), cursor=cursor
            )
        except InvalidCursor as exc:
            raise BadCursor(cursor) from exc
        return {"items": [method_summary(row, await self._latest(row)) for row in rows], "next_cursor": next_cursor}

    async def list_versions(self, caller: Caller, method_id: str, *, limit: int | None, cursor: str | None) -> dict[str, Any]:
        await self.live(caller, method_id)
        before = None
        if cursor is not None:
            try:
                (before,) = decode_position("versions:" + method_id, cursor, 1)
            except InvalidCursor as exc:
                raise BadCursor(cursor) from exc
            if not isinstance(before, int):
                raise BadCursor(cursor)
        rows, next_before = await self.repository.list_versions(method_id, limit=page_limit(limit), before=before)
        next_cursor = encode_position("versions:" + method_id, next_before) if next_before is not None else None
        return {"items": [version_summary(row) for row in rows], "next_cursor": next_cursor}

    async def get_version(self, caller: Caller, method_id: str, version: int, *, base_url: str) -> dict[str, Any]:
        await self.live(caller, method_id)
        row = await self.repository.get_version(method_id, version)
        if row is None:
            raise problems.not_found(method_id, what=f"version {version} of the method", version=version)
        return {**version_summary(row), "method_id": method_id, "files": self.files(row["tree"], scope=caller.scope, base_url=base_url)}

    # ---------------------------------------------------------------- writes

    async def _read_tree(self, caller: Caller, files_document: str) -> MethodTreeFiles:
        """A `files` map read as method trees are (the same rules and limits), its files kept as the caller's blobs."""
        tree = await self.engine.read_method_tree(files_document, scope=caller.scope)
        await self.engine.store_method_tree(tree, scope=caller.scope)
        return tree

    def _draft_values(self, tree: MethodTreeFiles | None) -> dict[str, Any]:
        if tree is None:
            return {"draft": None, "draft_digest": None, "description": None}
        return {"draft": tree_entries(tree), "draft_digest": tree.digest, "description": description_of(tree)}

    async def create(self, caller: Caller, *, name: Any, files_document: str | None, input_data: Any) -> dict[str, Any]:
        name = problems.checked_name(name)
        if input_data is not None and not isinstance(input_data, dict):
            raise problems.invalid("input_data", "`input_data` must be a JSON object.")
        tree = await self._read_tree(caller, files_document) if files_document is not None else None
        now = next_token(None)
        row = {
            "id": new_method_id(),
            "caller_id": caller.id,
            "name": name,
            "input_data": input_data,
            "created_by": caller.id,
            "created_at": now,
            "updated_at": now,
            "latest_version": None,
            "deletion_state": None,
            "deletion_job_id": None,
            **self._draft_values(tree),
        }
        await self.repository.insert_method(row)
        return method_data(row, None)

    async def rename(self, caller: Caller, method_id: str, name: Any) -> dict[str, Any]:
        name = problems.checked_name(name)
        await self.live(caller, method_id)
        if not await self.repository.rename(method_id, name):
            raise problems.being_deleted(method_id)
        return await self.data(await self.live(caller, method_id))

    async def write_draft(
        self, caller: Caller, method_id: str, *, files_document: str | None, input_data: Any = KEEP, expected: Any = None
    ) -> dict[str, Any]:
        """Replace the draft's whole tree (None empties it); with ``expected``, only while the token is that one."""
        if expected is not None and not isinstance(expected, str):
            raise problems.invalid("expected_updated_at", "`expected_updated_at` must be the draft token, a text.")
        if input_data is not KEEP and input_data is not None and not isinstance(input_data, dict):
            raise problems.invalid("input_data", "`input_data` must be a JSON object or null.")
        row = await self.live(caller, method_id)
        if expected is not None and expected != iso(row["updated_at"]):
            raise problems.update_conflict(method_id)
        tree = await self._read_tree(caller, files_document) if files_document is not None else None
        values = self._draft_values(tree)
        if input_data is not KEEP:
            values["input_data"] = input_data
        for _attempt in range(5):
            written = await self.repository.write_draft(method_id, values, expected=row["updated_at"])
            if written is not None:
                return await self.data(written)
            row = await self.live(caller, method_id)
            if expected is not None:
                raise problems.update_conflict(method_id)
        raise problems.busy(method_id)

    # ---------------------------------------------------------------- resolution

    async def resolve(self, caller: Caller, selector: Selector) -> ResolvedMethod:
        """The tree a selector names: the latest published version (409 when none), a fixed one, or the draft."""
        row = await self.live(caller, selector.method_id)
        if selector.version == DRAFT:
            if not row["draft"]:
                raise problems.invalid("method_id", f"The draft of the method {selector.method_id!r} is empty: there is nothing to run.")
            entries, label = row["draft"], DRAFT
        else:
            number = selector.version if selector.version is not None else row["latest_version"]
            if number is None:
                raise problems.not_published(selector.method_id)
            version = await self.repository.get_version(selector.method_id, number)
            if version is None:
                raise problems.not_found(selector.method_id, what=f"version {number} of the method", version=number)
            entries, label = version["tree"], str(number)
        tree = await self.engine.stored_method_tree({path: entry["sha256"] for path, entry in entries.items()}, scope=caller.scope)
        return ResolvedMethod(tree=tree, method_id=selector.method_id, version=label)

    async def check_exists(self, caller: Caller, method_id: str) -> None:
        await self.live(caller, method_id)

    async def linked_file(self, *, scope: str, sha256: str, expires: str, signature: str) -> bytes | None:
        """A method file's bytes for a link this server signed (None when the link is void or the blob is gone)."""
        if not self.links.check(scope=scope, sha256=sha256, expires=expires, signature=signature):
            return None
        return await self.engine.blobs.get(scope, sha256)
