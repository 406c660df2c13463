"""The object store interface shared by the local and S3 backends, and the key rules both enforce."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

MAX_KEY_LENGTH = 512
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and the content type it was stored with."""

    data: bytes
    content_type: str | None


@dataclass(frozen=True)
class ObjectInfo:
    """What `head` tells about an object without reading its bytes."""

    key: str
    size: int
    content_type: str | None


class ObjectNotFound(KeyError):
    """No object under this key; the message is the key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return self.key


class StorageUnavailable(RuntimeError):
    """The backend cannot be used (unreachable, refused, unexpected answer). The message is safe to log: never a credential."""


def is_valid_segment(segment: str) -> bool:
    """True when `segment` can be one '/'-separated part of a key."""
    return segment not in (".", "..") and _SEGMENT.fullmatch(segment) is not None


def validate_key(key: str) -> str:
    """Return the key or raise ValueError. Keys are '/'-separated segments of [A-Za-z0-9._-], no empty segment,
    no '.' or '..' segment, no leading/trailing '/', length <= 512."""
    if not isinstance(key, str):
        raise ValueError(f"object key must be a string, not {type(key).__name__}")
    if not key:
        raise ValueError("object key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"object key is longer than {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if not is_valid_segment(segment):
            raise ValueError(f"invalid object key {key!r}: segments are non-empty runs of [A-Za-z0-9._-], not '.' or '..'")
    return key


def validate_nb_bytes(nb_bytes: int) -> int:
    """Return `nb_bytes` or raise ValueError when it is not a non-negative int."""
    if isinstance(nb_bytes, bool) or not isinstance(nb_bytes, int) or nb_bytes < 0:
        raise ValueError(f"nb_bytes must be a non-negative integer, not {nb_bytes!r}")
    return nb_bytes


def validate_content_type(content_type: str | None) -> str | None:
    """Return the content type or raise ValueError: printable ASCII, at most 255 characters (it travels as an HTTP header)."""
    if content_type is None:
        return None
    if not isinstance(content_type, str) or not content_type or len(content_type) > 255:
        raise ValueError("content type must be a non-empty string of at most 255 characters")
    if any(not (" " <= char <= "~") for char in content_type):
        raise ValueError("content type must be printable ASCII")
    return content_type


class ObjectStore(ABC):
    """Keyed blobs with an optional content type. Keys follow `validate_key`; a prefix is a valid key and matches
    the keys that start with `prefix + "/"` (so `a/b` never matches `a/bc/...` nor `a/b` itself)."""

    kind: ClassVar[str]

    @abstractmethod
    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store `data` under `key`, replacing any previous object."""

    @abstractmethod
    async def get(self, key: str) -> StoredObject:
        """The object's bytes and content type; ObjectNotFound when missing."""

    @abstractmethod
    async def get_head(self, key: str, nb_bytes: int) -> bytes:
        """The first `nb_bytes` bytes (fewer when the object is shorter); ObjectNotFound when missing."""

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo:
        """Size and content type without the bytes; ObjectNotFound when missing."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; a missing key is fine."""

    @abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix + "/"`; return how many were removed."""

    @abstractmethod
    async def list_keys(self, prefix: str) -> list[str]:
        """The sorted keys that start with `prefix + "/"`."""

    @abstractmethod
    async def check(self) -> None:
        """Raise StorageUnavailable when the backend cannot be used."""

    @abstractmethod
    async def close(self) -> None:
        """Release the backend's resources."""
