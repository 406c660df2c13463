"""Object storage spans: with tracing on, the object store is wrapped so each operation (put, get, head, delete,
list) is one span named ``storage <operation>`` with the backend and the byte count; keys are not recorded (they
carry caller scopes and run ids)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from opentelemetry.trace import SpanKind

from pipelex_server.observability.tracing import STATE
from pipelex_server.storage.base import ObjectInfo, ObjectStore, StoredObject

T = TypeVar("T")


def traced_store(store: ObjectStore) -> ObjectStore:
    """``store`` itself when tracing is off; else the same store behind spans."""
    return TracedObjectStore(store) if STATE.enabled else store


class TracedObjectStore(ObjectStore):
    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.kind = inner.kind  # type: ignore[misc]

    def __getattr__(self, name: str) -> Any:  # anything beyond the interface (a backend's own helpers)
        return getattr(self.inner, name)

    async def _traced(self, operation: str, call: Callable[[], Awaitable[T]], nb_bytes: int | None = None) -> T:
        if not STATE.enabled:
            return await call()
        attributes: dict[str, Any] = {"pipelex.storage.backend": self.kind, "pipelex.storage.operation": operation}
        if nb_bytes is not None:
            attributes["pipelex.storage.bytes"] = nb_bytes
        with STATE.tracer.start_as_current_span(f"storage {operation}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            result = await call()
            if isinstance(result, StoredObject):
                span.set_attribute("pipelex.storage.bytes", len(result.data))
            elif isinstance(result, ObjectInfo):
                span.set_attribute("pipelex.storage.bytes", result.size)
            return result

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        await self._traced("put", lambda: self.inner.put(key, data, content_type=content_type), len(data))

    async def get(self, key: str) -> StoredObject:
        return await self._traced("get", lambda: self.inner.get(key))

    async def get_head(self, key: str, nb_bytes: int) -> bytes:
        return await self._traced("get_head", lambda: self.inner.get_head(key, nb_bytes))

    async def head(self, key: str) -> ObjectInfo:
        return await self._traced("head", lambda: self.inner.head(key))

    async def delete(self, key: str) -> None:
        await self._traced("delete", lambda: self.inner.delete(key))

    async def delete_prefix(self, prefix: str) -> int:
        return await self._traced("delete_prefix", lambda: self.inner.delete_prefix(prefix))

    async def list_keys(self, prefix: str) -> list[str]:
        return await self._traced("list", lambda: self.inner.list_keys(prefix))

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()
