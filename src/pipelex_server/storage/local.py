"""Objects as files under a root directory.

Layout: the object `a/b/c` is the file `<root>/a/b/c`; its content type, when it has one, is the sidecar file
`<root>/a/b/c~content-type`. Writes go to a temp file `.c~tmp-<random>` in the same directory, then `os.replace`.
Both names hold `~`, which no key segment can, so neither ever collides with a key nor shows up in `list_keys`.

Every path is walked from an open descriptor of the root one segment at a time with O_NOFOLLOW, so a symlink
planted anywhere under the root is never followed (StorageUnavailable), whatever `validate_key` lets through.
A key cannot be both an object and the prefix of another object here (`a/b` and `a/b/c`): such a put is a ValueError.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pipelex_server.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
    StoredObject,
    is_valid_segment,
    validate_content_type,
    validate_key,
    validate_nb_bytes,
)

CONTENT_TYPE_SUFFIX = "~content-type"
TEMP_MARK = "~tmp-"
_FILE_MODE = 0o600
_DIR_MODE = 0o700
_PUT_ATTEMPTS = 5  # a concurrent delete may remove an emptied directory between our mkdir and our write
T = TypeVar("T")
_OPEN_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _SymlinkRefused(StorageUnavailable):
    """A symlink sits where the store expects its own file or directory."""


def _refuse_symlink(key: str) -> _SymlinkRefused:
    return _SymlinkRefused(f"local storage refuses a symlink on the path of {key!r}")


class LocalObjectStore(ObjectStore):
    """Files under `root`; blocking I/O runs in worker threads."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    # -- descriptors -------------------------------------------------------------------------------------------

    def _open_root(self, *, create: bool) -> int:
        if create:
            self.root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _open_subdir(self, parent_fd: int, name: str, key: str) -> int:
        """Open the directory `name` in `parent_fd` without following a symlink."""
        try:
            fd = os.open(name, _OPEN_DIR, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refuse_symlink(key) from None
            raise
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", name)
        return fd

    @contextmanager
    def _dirs(self, segments: list[str], key: str, *, create: bool) -> Iterator[list[int]]:
        """Descriptors of the root and of each directory in `segments` (created when `create`), closed on exit."""
        fds = [self._open_root(create=create)]
        try:
            for segment in segments:
                try:
                    fds.append(self._open_subdir(fds[-1], segment, key))
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(segment, _DIR_MODE, dir_fd=fds[-1])
                    except FileExistsError:
                        pass
                    fds.append(self._open_subdir(fds[-1], segment, key))
            yield fds
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def _open_file(self, dir_fd: int, name: str, key: str) -> int:
        """Open the regular file `name` for reading without following a symlink; FileNotFoundError otherwise."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refuse_symlink(key) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileNotFoundError(errno.ENOENT, "not a regular file", name)
        return fd

    def _read_content_type(self, dir_fd: int, name: str, key: str) -> str | None:
        try:
            fd = self._open_file(dir_fd, name + CONTENT_TYPE_SUFFIX, key)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as file:
            return file.read(1024).decode("ascii", errors="replace") or None

    @staticmethod
    def _write_atomically(dir_fd: int, name: str, data: bytes) -> None:
        temp = f".{name}{TEMP_MARK}{secrets.token_hex(8)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                pass
            raise

    @staticmethod
    def _unlink(dir_fd: int, name: str) -> bool:
        """Remove the file `name` (a symlink is removed itself, never followed); False when there was none."""
        try:
            os.unlink(name, dir_fd=dir_fd)
        except (FileNotFoundError, IsADirectoryError):
            return False
        return True

    @staticmethod
    def _prune(fds: list[int], segments: list[str]) -> None:
        """Remove the empty directories at the end of `segments`, deepest first, stopping at the first non-empty one."""
        for index in range(len(segments) - 1, -1, -1):
            try:
                os.rmdir(segments[index], dir_fd=fds[index])
            except OSError:
                return

    # -- blocking operations -------------------------------------------------------------------------------------

    def _put(self, key: str, data: bytes, content_type: str | None) -> None:
        *parents, name = key.split("/")
        for attempt in range(_PUT_ATTEMPTS):
            try:
                with self._dirs(parents, key, create=True) as fds:
                    if content_type is None:
                        self._unlink(fds[-1], name + CONTENT_TYPE_SUFFIX)
                    else:
                        self._write_atomically(fds[-1], name + CONTENT_TYPE_SUFFIX, content_type.encode("ascii"))
                    self._write_atomically(fds[-1], name, data)
                return
            except FileNotFoundError:
                if attempt == _PUT_ATTEMPTS - 1:
                    raise
            except (NotADirectoryError, IsADirectoryError):
                raise ValueError(f"object key {key!r} conflicts with an existing key (one cannot be the prefix of the other)") from None

    def _read(self, key: str, nb_bytes: int | None) -> StoredObject:
        *parents, name = key.split("/")
        try:
            with self._dirs(parents, key, create=False) as fds:
                fd = self._open_file(fds[-1], name, key)
                with os.fdopen(fd, "rb") as file:
                    size = os.fstat(fd).st_size
                    data = file.read() if nb_bytes is None else file.read(min(nb_bytes, size))
                return StoredObject(data=data, content_type=self._read_content_type(fds[-1], name, key))
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def _head(self, key: str) -> ObjectInfo:
        *parents, name = key.split("/")
        try:
            with self._dirs(parents, key, create=False) as fds:
                fd = self._open_file(fds[-1], name, key)
                try:
                    size = os.fstat(fd).st_size
                finally:
                    os.close(fd)
                return ObjectInfo(key=key, size=size, content_type=self._read_content_type(fds[-1], name, key))
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def _delete(self, key: str) -> None:
        *parents, name = key.split("/")
        try:
            with self._dirs(parents, key, create=False) as fds:
                self._unlink(fds[-1], name)
                self._unlink(fds[-1], name + CONTENT_TYPE_SUFFIX)
                self._prune(fds, parents)
        except (FileNotFoundError, NotADirectoryError):
            return

    def _walk(self, dir_fd: int, prefix: str, *, remove: bool) -> list[str]:
        """Keys of the objects under `dir_fd` (named `prefix/...`), removing them (and emptied directories) when `remove`.
        Symlinks, temp files and names no key can have are left alone."""
        keys: list[str] = []
        with os.scandir(dir_fd) as entries:
            listed = [(entry.name, entry.is_dir(follow_symlinks=False), entry.is_file(follow_symlinks=False)) for entry in entries]
        for name, is_dir, is_file in listed:
            if is_dir and is_valid_segment(name):
                try:
                    sub_fd = self._open_subdir(dir_fd, name, prefix)
                except (FileNotFoundError, NotADirectoryError, _SymlinkRefused):
                    continue  # replaced or removed since the listing
                try:
                    keys.extend(self._walk(sub_fd, f"{prefix}/{name}", remove=remove))
                finally:
                    os.close(sub_fd)
                if remove:
                    try:
                        os.rmdir(name, dir_fd=dir_fd)
                    except OSError:
                        pass
            elif is_file and is_valid_segment(name):
                if not remove or self._unlink(dir_fd, name):
                    keys.append(f"{prefix}/{name}")
                if remove:
                    self._unlink(dir_fd, name + CONTENT_TYPE_SUFFIX)
            elif is_file and remove and name.endswith(CONTENT_TYPE_SUFFIX):
                self._unlink(dir_fd, name)  # an orphan sidecar
        return keys

    def _list_or_remove(self, prefix: str, remove: bool) -> list[str]:
        segments = prefix.split("/")
        try:
            with self._dirs(segments, prefix, create=False) as fds:
                keys = self._walk(fds[-1], prefix, remove=remove)
                if remove:
                    self._prune(fds, segments)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(keys)

    def _check(self) -> None:
        fd = self._open_root(create=True)
        try:
            probe = f".check{TEMP_MARK}{secrets.token_hex(8)}"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE, dir_fd=fd))
            os.unlink(probe, dir_fd=fd)
        finally:
            os.close(fd)

    # -- the interface -------------------------------------------------------------------------------------------

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.to_thread(func, *args)
        except (ObjectNotFound, StorageUnavailable, ValueError):
            raise
        except OSError as exc:
            raise StorageUnavailable(f"local storage error under {self.root}: {exc.strerror or type(exc).__name__}") from exc

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        validate_key(key)
        validate_content_type(content_type)
        await self._run(self._put, key, bytes(data), content_type)

    async def get(self, key: str) -> StoredObject:
        validate_key(key)
        return await self._run(self._read, key, None)

    async def get_head(self, key: str, nb_bytes: int) -> bytes:
        validate_key(key)
        validate_nb_bytes(nb_bytes)
        stored: StoredObject = await self._run(self._read, key, nb_bytes)
        return stored.data

    async def head(self, key: str) -> ObjectInfo:
        validate_key(key)
        return await self._run(self._head, key)

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._run(self._delete, key)

    async def delete_prefix(self, prefix: str) -> int:
        validate_key(prefix)
        removed: list[str] = await self._run(self._list_or_remove, prefix, True)
        return len(removed)

    async def list_keys(self, prefix: str) -> list[str]:
        validate_key(prefix)
        return await self._run(self._list_or_remove, prefix, False)

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self._check)
        except OSError as exc:
            raise StorageUnavailable(f"local storage root {self.root} is not usable: {exc.strerror or type(exc).__name__}") from exc

    async def close(self) -> None:
        """Nothing to release."""
