"""The on-disk cache of fetched commits: one bare repository per commit SHA, bounded by count, bytes and age.

A request resolves its reference to a commit first (`git ls-remote`, no clone), then looks the commit up here: a commit
already held is used as is, with no fetch. A missing commit is fetched once, whatever the number of requests asking for
it at the same time (a lock per commit), into a staging directory that is renamed into place only when complete, so a
failed or cancelled fetch leaves nothing in the cache. A commit being read is pinned: eviction never removes it.
Eviction runs after each install, oldest last use (mtime) first, never the entry just installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from pipelex_server.methods.git import Git

STAGING = ".staging"
STALE_STAGING_SECONDS = 2 * 3600  # longer than any fetch's deadline (METHOD_FETCH_TIMEOUT_SECONDS is at most 3600)


def directory_bytes(directory: Path) -> int:
    total = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


class MethodCache:
    """SHA-keyed bare repositories under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, *, git: Git, max_clones: int, max_total_bytes: int, max_age_seconds: float) -> None:
        self.root = root
        self.git = git
        self.max_clones = max_clones
        self.max_total_bytes = max_total_bytes
        self.max_age_seconds = max_age_seconds
        self.fetches = 0  # commits fetched by this process (a cache hit fetches nothing)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._pins: dict[str, int] = {}
        self._clear_stale_staging()

    def _clear_stale_staging(self) -> None:
        """Remove what a killed process left half-written; a staging directory another live process (sharing this
        cache) is still writing is younger than a fetch can last, and stays."""
        staging = self.root / STAGING
        if not staging.is_dir():
            return
        cutoff = time.time() - STALE_STAGING_SECONDS
        for entry in staging.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def _key_lock(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    @contextlib.asynccontextmanager
    async def pinned(self, *, url: str, ref: str, commit: str, deadline: float) -> AsyncIterator[tuple[Path, str]]:
        """The bare repository holding ``commit`` (fetching ``ref`` of ``url`` when it is not held) and the commit it
        holds, pinned against eviction for the block. A ref that moved between the resolution and the fetch yields the
        commit actually fetched."""
        async with self._key_lock(commit):
            entry = self.root / commit
            if entry.is_dir():
                os.utime(entry)  # last use: the eviction order
            else:
                entry, commit = await self._fetch(url=url, ref=ref, deadline=deadline)
            self._pins[commit] = self._pins.get(commit, 0) + 1
        try:
            yield entry, commit
        finally:
            remaining = self._pins.get(commit, 0) - 1
            if remaining > 0:
                self._pins[commit] = remaining
            else:
                self._pins.pop(commit, None)

    async def _fetch(self, *, url: str, ref: str, deadline: float) -> tuple[Path, str]:
        staging = self.root / STAGING / uuid.uuid4().hex
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            commit = await self.git.fetch_commit(url, ref, into=staging, deadline=deadline)
            self.fetches += 1
            target = self.root / commit
            if not target.exists():
                with contextlib.suppress(OSError):  # another process installed the same commit first: use its copy
                    staging.rename(target)
            os.utime(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        await asyncio.to_thread(self.evict, keep=commit)  # sizes every entry on disk: off the event loop
        return target, commit

    def entries(self) -> list[Path]:
        """The cached commits, oldest last use first."""
        if not self.root.is_dir():
            return []
        found = [entry for entry in self.root.iterdir() if entry.is_dir() and entry.name != STAGING]
        return sorted(found, key=lambda entry: entry.stat().st_mtime)

    def evict(self, *, keep: str) -> None:
        """Bring the cache within its bounds: entries past the age limit go, then the oldest until the count and byte
        bounds hold. ``keep`` (the entry just installed) and pinned entries stay, though they count."""
        now = time.time()
        survivors: list[Path] = []
        for entry in self.entries():
            evictable = entry.name != keep and entry.name not in self._pins
            if evictable and now - entry.stat().st_mtime > self.max_age_seconds:
                shutil.rmtree(entry, ignore_errors=True)
            else:
                survivors.append(entry)
        sizes = {entry.name: directory_bytes(entry) for entry in survivors}
        count, total = len(survivors), sum(sizes.values())
        for entry in survivors:
            if count <= self.max_clones and total <= self.max_total_bytes:
                break
            if entry.name == keep or entry.name in self._pins:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            count -= 1
            total -= sizes[entry.name]
