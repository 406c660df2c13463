"""The file service: the SDK's JSON upload, the caller's file records (list, read, by address, rename), links to them,
storage addresses resolved to expiring links, and the check of a followed local link.

Everything is the caller's: another caller's file id answers the same 404 as an unknown one; another caller's address
is refused as such (the address names its scope). The multipart ``/api/v1/uploads`` shares these records: the upload
service tells this one of every upload stored or removed (``upload_created``/``upload_deleted``).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pipelex_server.api.protocol.platform_problems import platform_problem
from pipelex_server.errors import ApiProblem
from pipelex_server.files import records
from pipelex_server.files.cursors import Cursors
from pipelex_server.files.links import LinkGrant, LinkRefused, LinkSigner
from pipelex_server.runs.model import Caller
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectNotFound, ObjectStore, StorageUnavailable, StoredObject
from pipelex_server.store.common import utcnow
from pipelex_server.store.files import FileFilters, FileRepository
from pipelex_server.uploads import UploadService

FILE_ID_RE = re.compile(r"^fl_[0-9a-f]{32}$")
METHOD_ID_RE = re.compile(r"^mt_[A-Za-z0-9_-]{1,120}$")
MAX_LINKS = 100
MAX_REPEATED_FILTER = 100
UPLOAD_KINDS = ("uploaded", "test")


def new_file_id() -> str:
    return f"fl_{uuid.uuid4().hex}"


def invalid(detail: str, field: str, status: int = 422) -> ApiProblem:
    return platform_problem("request.invalid", status=status, detail=detail, params={"field": field}, location={"field": field})


def file_not_found(file_id: str) -> ApiProblem:
    return platform_problem("pipelex.storage.not_found", status=404, detail=f"No file {file_id!r}.", params={"file_id": file_id})


def instant(value: str | None, field: str) -> datetime | None:
    """An ISO-8601 instant with its UTC offset; a bare date or a naive time is a 400 naming ``field``."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise invalid(f"'{field}' must be an ISO-8601 instant with a UTC offset, such as 2026-01-31T09:00:00Z.", field, status=400)
    return parsed


def surface_of(user_agent: str | None) -> str:
    agent = (user_agent or "").lower()
    return "sdk" if "pipelex-sdk" in agent or "pipelex_sdk" in agent else "raw_http"


class FileService:
    def __init__(
        self,
        *,
        settings: Settings,
        repository: FileRepository,
        uploads: UploadService,
        store: ObjectStore,
        signer: LinkSigner,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.uploads = uploads
        self.store = store
        self.signer = signer
        self.cursors = Cursors(signer)
        uploads.listeners.append(self)

    # ---------------------------------------------------------------- uploads (both routes)

    async def upload_created(self, row: dict[str, Any], record: dict[str, Any]) -> None:
        name = records.clean_name(str(record.get("original_name") or ""))[: records.MAX_NAME_CHARS] or records.basename(row["key"])
        await self.repository.insert(
            {
                "id": record.get("file_id") or new_file_id(),
                "caller_id": row["caller_id"],
                "key": row["key"],
                "name": name,
                "original_name": name,
                "media_type": row["content_type"],
                "size": row["size"],
                "sha256": row["sha256"],
                "kind": record.get("kind") or "uploaded",
                "role": None,
                "surface": record.get("surface"),
                "run_id": None,
                "method_id": record.get("method_id"),
                "method_version": None,
                "upload_id": row["id"],
                "created_at": row["created_at"],
            }
        )

    async def upload_deleted(self, row: dict[str, Any]) -> None:
        await self.repository.delete_for_upload(row["id"])

    async def upload(
        self,
        *,
        caller: Caller,
        filename: str,
        data: str,
        content_type: str,
        kind: str | None,
        method_id: str | None,
        user_agent: str | None,
        check_method: Callable[[str], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/upload``: base64 bytes stored as an upload, with its file record. A test file's method must be one
        of the caller's (``check_method``: the catalog's 404, or 409 while the method is being deleted)."""
        if kind is not None and kind not in UPLOAD_KINDS:
            raise invalid(f"'kind' is one of {', '.join(UPLOAD_KINDS)}.", "kind")
        if method_id is not None and not METHOD_ID_RE.match(method_id):
            raise invalid("'method_id' is a bare catalog id: mt_ followed by letters, digits, _ or -.", "method_id")
        if kind == "test" and method_id is None:
            raise invalid("A test file names the method it is for: send 'method_id' with kind 'test'.", "method_id")
        if kind != "test" and method_id is not None:
            raise invalid("Only a test file names a method: send 'method_id' with kind 'test' alone.", "method_id")
        if method_id is not None and check_method is not None:
            await check_method(method_id)
        if len(data) > self.settings.upload_max_bytes * 4 // 3 + 8:
            raise self._too_large()
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid("'data' is not base64.", "data") from exc
        if len(raw) > self.settings.upload_max_bytes:
            raise self._too_large()
        file_id = new_file_id()
        record = {"file_id": file_id, "kind": kind or "uploaded", "method_id": method_id, "surface": surface_of(user_agent)}
        record["original_name"] = filename
        document = await self.uploads.create(caller=caller, data=raw, filename=filename, declared_type=content_type, record=record)
        return {"uri": document["uri"], "filename": filename, "file_id": file_id}

    def _too_large(self) -> ApiProblem:
        limit = self.settings.upload_max_bytes
        return platform_problem(
            "request.too_large", status=413, detail=f"The file is larger than UPLOAD_MAX_MIB ({limit} bytes).", params={"limit": limit}
        )

    # ---------------------------------------------------------------- records

    async def owned(self, caller: Caller, file_id: str) -> dict[str, Any]:
        row = await self.repository.get(file_id) if FILE_ID_RE.match(file_id) else None
        if row is None or row["caller_id"] != caller.id:
            raise file_not_found(file_id)
        return row

    async def list(self, *, caller: Caller, query: dict[str, Any], limit: int, cursor: str | None) -> dict[str, Any]:
        """``GET /v1/files``: one page of the caller's files, newest first, under the filters."""
        formats, media_types = query.get("format") or [], query.get("media_type") or []
        for name, values in (("format", formats), ("media_type", media_types), ("q", [query.get("q") or ""])):
            if len(values) > MAX_REPEATED_FILTER:
                raise invalid(f"At most {MAX_REPEATED_FILTER} values of '{name}'.", name)
            if any("\x00" in value for value in values):  # no database stores it (PostgreSQL refuses it outright)
                raise invalid(f"'{name}' holds a NUL character.", name)
        created_from, created_to = instant(query.get("created_from"), "created_from"), instant(query.get("created_to"), "created_to")
        if created_from and created_to and created_from > created_to:
            raise invalid("'created_from' is after 'created_to'.", "created_from", status=400)
        if query.get("q") == "" or (query.get("q") and len(query["q"]) > 200):
            raise invalid("'q' is 1 to 200 characters.", "q")
        filters = FileFilters(
            run_id=query.get("run_id"),
            method_id=query.get("method_id"),
            kind=query.get("kind"),
            created_from=created_from,
            created_to=created_to,
            q=query.get("q"),
        )
        if formats or media_types:
            exact = [*media_types, *(t for f in formats for t in records.FORMATS.get(f, ((), ()))[0])]
            families = [p for f in formats for p in records.FORMATS.get(f, ((), ()))[1]]
            if not exact and not families:  # only format keys no file has
                return {"items": [], "next_cursor": None}
            filters.media_types, filters.media_type_prefixes = exact, families
        bound = {key: value for key, value in query.items() if key != "cursor"}
        after = None
        if cursor is not None:
            created_at, row_id = self.cursors.read(cursor, caller_id=caller.id, list_id="files", filters=bound)
            after = (datetime.fromisoformat(created_at), row_id)
        created_by = query.get("created_by")
        if created_by not in (None, "me", caller.id):
            return {"items": [], "next_cursor": None}  # one caller is one member: no other member's files
        rows, more = await self.repository.page(caller.id, filters, limit=limit, after=after)
        next_cursor = None
        if more and rows:
            position = [rows[-1]["created_at"].isoformat(), rows[-1]["id"]]
            next_cursor = self.cursors.issue(caller_id=caller.id, list_id="files", filters=bound, position=position)
        return {"items": [records.summary(row) for row in rows], "next_cursor": next_cursor}

    async def get(self, *, caller: Caller, file_id: str, uses_limit: int, uses_cursor: str | None) -> dict[str, Any]:
        row = await self.owned(caller, file_id)
        after_id = None
        if uses_cursor is not None:
            (after_id,) = self.cursors.read(uses_cursor, caller_id=caller.id, list_id=f"uses:{file_id}", filters={}, field="uses_cursor")
            if not isinstance(after_id, int):
                raise invalid("The 'uses_cursor' is not one this server issued.", "uses_cursor", status=400)
        uses, more = await self.repository.uses(caller.id, row["key"], limit=uses_limit, after_id=after_id)
        next_cursor = (
            self.cursors.issue(caller_id=caller.id, list_id=f"uses:{file_id}", filters={}, position=[uses[-1]["id"]])
            if more and uses
            else None
        )
        items = [
            {
                "uri": records.uri_of(use["key"]),
                "holder_type": use["holder_type"],
                "holder_id": use["holder_id"],
                "method_id": use["method_id"],
                "created_at": records.iso(use["created_at"]),
            }
            for use in uses
        ]
        return {
            **records.record(row),
            "method_ids": await self.repository.method_ids(caller.id, row["key"]),
            "uses": {"items": items, "next_cursor": next_cursor},
        }

    def checked_key(self, caller: Caller, uri: str, field: str = "uri") -> str:
        """The key of one of the caller's addresses: 422 for a malformed address, 403 for another caller's."""
        key = records.key_of(uri)
        if key is None:
            raise platform_problem(
                "pipelex.storage.uri_invalid",
                detail="The storage address is malformed.",
                params={"field": field},
                location={"field": field},
            )
        if records.scope_of(key) != caller.scope:
            raise platform_problem("pipelex.org.mismatch", detail="The storage address belongs to another caller.", params={"field": field})
        return key

    async def by_uri(self, *, caller: Caller, uri: str, run_starter_first: bool = False) -> dict[str, Any]:
        key = self.checked_key(caller, uri)
        return {"items": [records.record(row) for row in await self.repository.by_key(caller.id, key)]}

    async def rename(self, *, caller: Caller, file_id: str, name: str) -> dict[str, Any]:
        row = await self.owned(caller, file_id)
        if len(name) > records.MAX_NAME_CHARS:
            raise invalid(f"A name is at most {records.MAX_NAME_CHARS} characters.", "name")
        cleaned = records.renamed(name, row["original_name"])
        if not cleaned or len(cleaned) > records.MAX_NAME_CHARS:
            raise invalid("The name has nothing left once control and format characters and the ends' spaces are removed.", "name")
        renamed_row = await self.repository.rename(file_id, caller.id, cleaned)
        if renamed_row is None:
            raise file_not_found(file_id)
        return records.record(renamed_row)

    # ---------------------------------------------------------------- links

    def _link(self, caller: Caller, base_url: str, key: str, name: str, media_type: str) -> dict[str, str]:
        link = self.signer.link(
            store=self.store, base_url=self.base_url(base_url), caller=caller.scope, key=key, name=name, media_type=media_type
        )
        return {"url": link.url, "expires_at": link.expires_at}

    def base_url(self, request_base_url: str) -> str:
        return (self.settings.public_base_url or request_base_url).rstrip("/")

    async def links(self, *, caller: Caller, base_url: str, targets: list[dict[str, str | None]]) -> dict[str, Any]:
        """``POST /v1/files/links``: one link or one error per requested file, in order."""
        if len(targets) > MAX_LINKS:
            raise invalid(f"At most {MAX_LINKS} files per request.", "files")
        items = []
        for target in targets:
            file_id, uri = target.get("file_id"), target.get("uri")
            refused = {"file_id": file_id, "uri": uri, "name": None, "media_type": None, "url": None, "expires_at": None}
            if file_id is not None:
                row = await self.repository.get(file_id) if FILE_ID_RE.match(file_id) else None
                if row is None or row["caller_id"] != caller.id:
                    items.append({**refused, "error": {"code": "not_found", "detail": f"No file {file_id!r}."}})
                    continue
            else:
                key = records.key_of(uri or "")
                if key is None:
                    items.append({**refused, "error": {"code": "invalid_storage_uri", "detail": "The storage address is malformed."}})
                    continue
                if records.scope_of(key) != caller.scope:
                    items.append({**refused, "error": {"code": "forbidden", "detail": "The storage address belongs to another caller."}})
                    continue
                held = await self.repository.by_key(caller.id, key)
                row = held[0] if held else None
                if row is None:
                    media_type = await self._media_type(key)
                    if media_type is None:
                        items.append({**refused, "error": {"code": "not_found", "detail": "No file is stored at this address."}})
                        continue
                    link = self._link(caller, base_url, key, records.basename(key), media_type)
                    items.append(
                        {"file_id": None, "uri": uri, "name": records.basename(key), "media_type": media_type, **link, "error": None}
                    )
                    continue
            link = self._link(caller, base_url, row["key"], row["name"], row["media_type"])
            items.append(
                {
                    "file_id": row["id"],
                    "uri": records.uri_of(row["key"]),
                    "name": row["name"],
                    "media_type": row["media_type"],
                    **link,
                    "error": None,
                }
            )
        return {"items": items}

    async def _media_type(self, key: str) -> str | None:
        try:
            info = await self.store.head(key)
        except ObjectNotFound:
            return None
        except StorageUnavailable as exc:
            raise ApiProblem(status=503, code="storage.unavailable", detail="The server's object storage is unavailable.") from exc
        return info.content_type or "application/octet-stream"

    def resolved(self, caller: Caller, base_url: str, uri: str) -> dict[str, Any]:
        """One address as a link (``/v1/resolve-storage-url``); the type is guessed from the key's extension."""
        import mimetypes

        key = self.checked_key(caller, uri)
        guessed = mimetypes.guess_type(records.basename(key), strict=False)[0]
        link = self._link(caller, base_url, key, records.basename(key), guessed or "application/octet-stream")
        return {**link, "content_type": guessed}

    def resolved_bulk(self, caller: Caller, base_url: str, uris: list[str]) -> dict[str, Any]:
        """Each address as a link or its error, in order (a bad address is an error on its item)."""
        if len(uris) > MAX_LINKS:
            raise invalid(f"At most {MAX_LINKS} addresses per request.", "uris")
        items = []
        for uri in uris:
            try:
                items.append({"uri": uri, **self.resolved(caller, base_url, uri), "error": None})
            except ApiProblem as problem:
                code = "forbidden" if problem.code == "pipelex.org.mismatch" else "invalid_storage_uri"
                items.append(
                    {"uri": uri, "url": None, "expires_at": None, "content_type": None, "error": {"code": code, "detail": problem.detail}}
                )
        return {"items": items}

    async def download(self, *, key: str, params: dict[str, str | None]) -> tuple[StoredObject, LinkGrant]:
        """A followed local link: the object it grants, or 403 (not a genuine link, or expired) / 404 (gone)."""
        try:
            grant = self.signer.grant(key=key, **params)  # type: ignore[arg-type]
        except LinkRefused as refused:
            raise platform_problem("auth.forbidden", detail=str(refused), params={"requirement": "signed_storage_link"}) from refused
        try:
            stored = await self.store.get(grant.key)
        except (ObjectNotFound, ValueError) as exc:
            raise platform_problem("pipelex.storage.not_found", status=404, detail="The linked file is no longer stored.") from exc
        except StorageUnavailable as exc:
            raise ApiProblem(status=503, code="storage.unavailable", detail="The server's object storage is unavailable.") from exc
        return stored, grant

    def now(self) -> datetime:
        return utcnow()
