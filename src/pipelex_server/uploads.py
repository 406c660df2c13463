"""Uploaded files: stored in the object store under the caller's scope, recorded in the database.

An upload's URI (``pipelex-storage://{scope}/uploads/{id}.{ext}``) is usable as a Document or Image input by its
owner only: the runtime reads with the caller's scope as its read scope, so another caller's URI is refused. The
name the client gave is kept as metadata (sanitized) and never used in a key or a path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from datetime import timedelta
from typing import Any, Protocol

from pipelex_server.errors import ApiProblem
from pipelex_server.fetch import sanitize_filename
from pipelex_server.runs.documents import iso
from pipelex_server.runs.model import Caller
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectStore, StorageUnavailable
from pipelex_server.storage.keys import extension_for, upload_key
from pipelex_server.store.common import InvalidCursor, utcnow
from pipelex_server.store.uploads import UploadRepository

logger = logging.getLogger(__name__)

RETENTION_SWEEP_SECONDS = 3600.0
UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_MEDIA_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def sniff_content_type(data: bytes, declared: str | None, filename: str | None = None) -> str:
    """The type the bytes say they are; else the declared one when well-formed and specific; else the one the file
    name's extension says (curl declares application/octet-stream for any file); else application/octet-stream."""
    import mimetypes

    import filetype

    kind = filetype.guess(data[:8192])
    if kind is not None:
        return kind.mime
    media_type = (declared or "").split(";", 1)[0].strip().lower()
    if _MEDIA_TYPE_RE.match(media_type) and media_type != "application/octet-stream":
        return media_type
    guessed = mimetypes.guess_type(filename or "", strict=False)[0] if filename else None
    return guessed or "application/octet-stream"


def upload_document(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "upload_id": row["id"],
        "uri": f"pipelex-storage://{row['key']}",
        "filename": row["filename"],
        "content_type": row["content_type"],
        "size_bytes": row["size"],
        "sha256": row["sha256"],
        "created_at": iso(row["created_at"]),
    }


def _not_found(upload_id: str) -> ApiProblem:
    return ApiProblem(status=404, code="upload.not_found", detail=f"No upload {upload_id!r}.", params={"upload_id": upload_id})


class UploadListener(Protocol):
    """Told of every upload stored and removed (the platform's file records, files/service.py)."""

    async def upload_created(self, row: dict[str, Any], record: dict[str, Any]) -> None: ...

    async def upload_deleted(self, row: dict[str, Any]) -> None: ...


class UploadService:
    def __init__(self, *, settings: Settings, repository: UploadRepository, store: ObjectStore) -> None:
        self.settings = settings
        self.repository = repository
        self.store = store
        self.listeners: list[UploadListener] = []
        self._background: asyncio.Task[None] | None = None

    def start_background(self) -> None:
        if self.settings.run_retention_days:
            self._background = asyncio.create_task(self._purge_forever(), name="upload-retention")

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)

    async def create(
        self, *, caller: Caller, data: bytes, filename: str | None, declared_type: str | None, record: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store and record an upload; ``record`` is what the listeners record with it (the name as sent, kind, ...)."""
        if not data:
            raise ApiProblem(status=422, code="upload.missing_file", detail="The uploaded file is empty.")
        upload_id = uuid.uuid4().hex
        content_type = sniff_content_type(data, declared_type, sanitize_filename(filename))
        key = upload_key(caller.scope, upload_id, extension_for(content_type))
        try:
            await self.store.put(key, data, content_type=content_type)
        except StorageUnavailable as exc:
            logger.error("could not store an upload: %s", exc)
            raise ApiProblem(status=503, code="storage.unavailable", detail="The server's object storage is unavailable.") from exc
        row = {
            "id": upload_id,
            "caller_id": caller.id,
            "key": key,
            "filename": sanitize_filename(filename),
            "content_type": content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "created_at": utcnow(),
        }
        try:
            await self.repository.insert(row)
        except BaseException:
            await self._delete_object(key)
            raise
        try:
            for listener in self.listeners:
                await listener.upload_created(row, {"original_name": filename, **(record or {})})
        except BaseException:
            await self.repository.delete(upload_id, caller.id)
            await self._delete_object(key)
            raise
        return upload_document(row)

    async def get(self, *, caller: Caller, upload_id: str) -> dict[str, Any]:
        row = await self.repository.get(upload_id) if UPLOAD_ID_RE.match(upload_id) else None
        if row is None or row["caller_id"] != caller.id:
            raise _not_found(upload_id)
        return upload_document(row)

    async def list(self, *, caller: Caller, limit: int, cursor: str | None) -> dict[str, Any]:
        try:
            rows, next_cursor = await self.repository.list_for(caller.id, limit, cursor)
        except InvalidCursor as exc:
            raise ApiProblem(status=422, code="request.invalid", detail="The cursor is not one this server gave.") from exc
        return {"uploads": [upload_document(row) for row in rows], "next_cursor": next_cursor}

    async def delete(self, *, caller: Caller, upload_id: str) -> None:
        row = await self.repository.delete(upload_id, caller.id) if UPLOAD_ID_RE.match(upload_id) else None
        if row is None:
            raise _not_found(upload_id)
        for listener in self.listeners:
            await listener.upload_deleted(row)
        await self._delete_object(row["key"])

    async def _delete_object(self, key: str) -> None:
        try:
            await self.store.delete(key)
        except StorageUnavailable:
            logger.warning("could not delete the stored object of an upload", exc_info=True)

    async def purge_expired(self) -> int:
        """Remove uploads older than RUN_RETENTION_DAYS (uploads follow the run retention setting)."""
        days = self.settings.run_retention_days
        if not days:
            return 0
        count = 0
        while batch := await self.repository.purge_before(utcnow() - timedelta(days=days)):
            for row in batch:
                for listener in self.listeners:
                    await listener.upload_deleted(row)
                await self._delete_object(row["key"])
            count += len(batch)
        if count:
            logger.info("purged %d uploads older than %g days", count, days)
        return count

    async def _purge_forever(self) -> None:
        while True:
            try:
                await self.purge_expired()
            except Exception:
                logger.exception("upload retention purge failed")
            await asyncio.sleep(RETENTION_SWEEP_SECONDS)
