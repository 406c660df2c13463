"""Content-addressed blobs of a caller in the object store: method tree files kept for background runs, and the blobs
the protocol's blob routes receive. A blob is stored once per caller under its SHA-256 and checked when read back."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Mapping

from pipelex_server.storage import ObjectStore
from pipelex_server.storage.base import ObjectNotFound
from pipelex_server.storage.keys import blob_key

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_PARALLEL_BLOB_IO = 8  # object store calls one request makes at once


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256(value: str) -> bool:
    return SHA256_HEX.fullmatch(value) is not None


class BlobCorrupted(RuntimeError):
    """A stored blob's bytes no longer match its hash (the message names the hash)."""


class BlobStore:
    """A caller's blobs, each under ``{scope}/blobs/{sha256[:2]}/{sha256}``."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def _size_of(self, scope: str, sha256: str) -> int | None:
        try:
            return (await self.store.head(blob_key(scope, sha256))).size
        except ObjectNotFound:
            return None

    async def put(self, scope: str, data: bytes) -> str:
        """Store ``data`` (once: a blob already held at its size is not written again). Returns its SHA-256."""
        sha256 = sha256_of(data)
        if await self._size_of(scope, sha256) != len(data):
            await self.store.put(blob_key(scope, sha256), data, content_type="application/octet-stream")
        return sha256

    async def put_many(self, scope: str, contents: Mapping[str, bytes]) -> dict[str, str]:
        """Store every file of ``contents`` (path -> bytes); returns path -> SHA-256."""
        limit = asyncio.Semaphore(MAX_PARALLEL_BLOB_IO)

        async def one(data: bytes) -> str:
            async with limit:
                return await self.put(scope, data)

        hashes = await asyncio.gather(*(one(data) for data in contents.values()))
        return dict(zip(contents, hashes, strict=True))

    async def get(self, scope: str, sha256: str) -> bytes | None:
        """The blob's bytes, or None when the caller holds no such blob. Raises ``BlobCorrupted`` when the stored
        bytes do not match the hash."""
        try:
            stored = await self.store.get(blob_key(scope, sha256))
        except ObjectNotFound:
            return None
        if sha256_of(stored.data) != sha256:
            raise BlobCorrupted(sha256)
        return stored.data

    async def get_many(self, scope: str, hashes: Iterable[str]) -> dict[str, bytes | None]:
        """Each blob's bytes by hash (None for an absent one)."""
        wanted = sorted(set(hashes))
        limit = asyncio.Semaphore(MAX_PARALLEL_BLOB_IO)

        async def one(sha256: str) -> bytes | None:
            async with limit:
                return await self.get(scope, sha256)

        return dict(zip(wanted, await asyncio.gather(*(one(sha256) for sha256 in wanted)), strict=True))

    async def missing(self, scope: str, wanted: Mapping[str, int]) -> list[str]:
        """The hashes of ``wanted`` (SHA-256 -> size) the caller does not hold at that size, sorted."""
        limit = asyncio.Semaphore(MAX_PARALLEL_BLOB_IO)

        async def one(sha256: str) -> int | None:
            async with limit:
                return await self._size_of(scope, sha256)

        hashes = sorted(wanted)
        sizes = await asyncio.gather(*(one(sha256) for sha256 in hashes))
        return [sha256 for sha256, size in zip(hashes, sizes, strict=True) if size != wanted[sha256]]
