"""The server's storage as the runtime sees it, and the server-side resolution of URL inputs.

The runtime reads and writes ``pipelex-storage://`` objects through one provider object, injected at boot; it
delegates to the object store of the server (local directory or S3-compatible), so uploads, fetched inputs,
``data:`` URLs the runtime relocates and run outputs all live in one place the server owns.

Remote inputs are fetched by the server, not by the runtime: the runtime's input preparation is wrapped so that an
``http(s)`` URL of a Document or Image is fetched through the server's guarded fetcher (size cap, timeout,
content-type check, private-address guard on every hop), stored under the run's storage scope, and handed to the
runtime as a storage reference. The fetches of one request share one byte budget (FETCH_MAX_REQUEST_MIB over all
its URL inputs together; the input whose download passes it is the one named). The resolution records what it rewrote (remote and ``data:`` URLs to storage
URIs), so a background run stores a request that references storage only and never fetches again.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pipelex.tools.storage.exceptions import StorageError, StorageFileNotFoundError, StorageInvalidKeyError, StorageNotConfiguredError
from pipelex.tools.storage.storage_provider_abstract import PIPELEX_STORAGE_SCHEME, StorageProviderAbstract, StoredData

from pipelex_server.errors import ApiProblem
from pipelex_server.fetch import ByteBudget, Fetcher, FetchRefused
from pipelex_server.storage import ObjectNotFound, ObjectStore, StorageUnavailable, validate_key
from pipelex_server.storage.keys import extension_for

logger = logging.getLogger(__name__)

_CURRENT_STORE: contextvars.ContextVar[ObjectStore | None] = contextvars.ContextVar("pipelex_server_store", default=None)
_RESOLUTION: contextvars.ContextVar[InputResolution | None] = contextvars.ContextVar("pipelex_server_inputs", default=None)

# A fetched Document must be a document, not the web page of a login wall or an error: HTML is refused.
_REFUSED_DOCUMENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})

FETCH_REASON_CODES = {
    "url_refused": "security.input_url_refused",
    "too_large": "input.too_large",
    "content_type": "input.file_type_unsupported",
}


def storage_uri(key: str) -> str:
    return f"{PIPELEX_STORAGE_SCHEME}{key}"


class ServerStorageProvider(StorageProviderAbstract):
    """The runtime's storage provider: the object store of the app running the current request.

    One runtime serves a process; in tests several apps (each with its own data directory) share it, so the store is
    looked up per call: the one bound to the current run (a context variable), else the last one attached.
    """

    def __init__(self) -> None:
        self.default: ObjectStore | None = None

    def _object_store(self) -> ObjectStore:
        store = _CURRENT_STORE.get() or self.default
        if store is None:
            raise StorageNotConfiguredError("the server has no object store attached")
        return store

    @staticmethod
    def _key(key: str) -> str:
        try:
            return validate_key(key)
        except ValueError as exc:
            raise StorageInvalidKeyError(f"invalid storage key: {exc}") from exc

    async def _load_with_metadata(self, key: str) -> StoredData:
        try:
            stored = await self._object_store().get(self._key(key))
        except ObjectNotFound as exc:
            raise StorageFileNotFoundError(f"File not found: '{key}'").with_params(scheme=self.storage_kind) from exc
        except StorageUnavailable as exc:
            raise StorageError(f"the object store is unavailable: {exc}") from exc
        return StoredData(data=stored.data, mime_type=stored.content_type)

    async def _load_head(self, key: str, *, nb_bytes: int) -> bytes:
        try:
            return await self._object_store().get_head(self._key(key), nb_bytes)
        except ObjectNotFound as exc:
            raise StorageFileNotFoundError(f"File not found: '{key}'").with_params(scheme=self.storage_kind) from exc
        except StorageUnavailable as exc:
            raise StorageError(f"the object store is unavailable: {exc}") from exc

    async def _load_size(self, key: str) -> int:
        try:
            return (await self._object_store().head(self._key(key))).size
        except ObjectNotFound as exc:
            raise StorageFileNotFoundError(f"File not found: '{key}'").with_params(scheme=self.storage_kind) from exc
        except StorageUnavailable as exc:
            raise StorageError(f"the object store is unavailable: {exc}") from exc

    async def _store(self, data: bytes, *, key: str, content_type: str | None, checksum_sha256_hex: str | None) -> None:
        try:
            await self._object_store().put(self._key(key), data, content_type=content_type)
        except StorageUnavailable as exc:
            raise StorageError(f"the object store is unavailable: {exc}") from exc

    async def public_url(self, uri: str) -> str | None:
        # Objects are served by the API to their owner only; there is no public link (and never a file:// URL).
        return None


PROVIDER = ServerStorageProvider()


@dataclass
class _Fetched:
    uri: str
    filename: str | None


@dataclass
class InputResolution:
    """The per-request state of the input resolution: where to store, how to fetch, how many bytes the request may
    still download (``max_request_bytes``, by default the fetcher's), what was rewritten."""

    store: ObjectStore
    fetcher: Fetcher
    storage_scope: str
    max_request_bytes: int | None = None
    rewrites: dict[str, str] = field(default_factory=dict)
    _fetches: dict[str, asyncio.Future[_Fetched]] = field(default_factory=dict)
    _budget: ByteBudget = field(init=False)

    def __post_init__(self) -> None:
        limit = self.max_request_bytes if self.max_request_bytes is not None else self.fetcher.max_request_bytes
        self._budget = ByteBudget(limit)

    async def fetch(self, url: str, *, image: bool, input_path: str) -> _Fetched:
        """Fetch a remote URL once per request (an input repeated in several places is fetched once)."""
        key = f"{'image' if image else 'document'}:{url}"
        pending = self._fetches.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_and_store(url, image=image, input_path=input_path))
            self._fetches[key] = pending
        return await asyncio.shield(pending)

    async def _fetch_and_store(self, url: str, *, image: bool, input_path: str) -> _Fetched:
        def accept(content_type: str) -> bool:
            if image:
                return content_type.startswith("image/")
            return content_type not in _REFUSED_DOCUMENT_TYPES

        try:
            fetched = await self.fetcher.fetch(url, accept=accept, budget=self._budget)
        except FetchRefused as exc:
            code = FETCH_REASON_CODES.get(exc.reason, "input.url_unreachable")
            params: dict[str, Any] = {"input": input_path, "reason": exc.reason}
            if exc.http_status is not None:
                params["http_status"] = exc.http_status
            raise ApiProblem(
                status=422,
                code=code,
                detail=f"Input '{input_path}': {exc.message}",
                params=params,
                location={"path": ["body", "inputs", input_path]},
            ) from exc
        digest = hashlib.sha256(fetched.data).hexdigest()
        key = validate_key(f"{self.storage_scope}/inputs/{digest[:40]}.{extension_for(fetched.content_type)}")
        try:
            await self.store.put(key, fetched.data, content_type=fetched.content_type)
        except StorageUnavailable as exc:
            logger.error("could not store a fetched input: %s", exc)
            raise ApiProblem(status=503, code="storage.unavailable", detail="The server's object storage is unavailable.") from exc
        return _Fetched(uri=storage_uri(key), filename=fetched.filename)


@contextmanager
def bound(store: ObjectStore | None, resolution: InputResolution | None = None) -> Iterator[None]:
    """Bind the app's object store (and the request's input resolution) to the code running inside."""
    store_token = _CURRENT_STORE.set(store)
    resolution_token = _RESOLUTION.set(resolution)
    try:
        yield
    finally:
        _RESOLUTION.reset(resolution_token)
        _CURRENT_STORE.reset(store_token)


def install_input_hook() -> None:
    """Wrap the runtime's preparation of Image/Document inputs with the server's URL resolution."""
    from pipelex.core.stuffs.image_content import ImageContent
    from pipelex.pipeline import input_normalizer

    original = input_normalizer._prepare_url_content
    if getattr(original, "_pipelex_server_hooked", False):
        return

    async def prepare_url_content(*, content: Any, path: Any, context: Any) -> Any:
        resolution = _RESOLUTION.get()
        url = content.url.strip() if isinstance(content.url, str) else content.url
        if resolution is None or not isinstance(url, str):
            return await original(content=content, path=path, context=context)
        if url.lower().startswith(("http://", "https://")):
            input_path = input_normalizer.format_file_input_path(path)
            fetched = await resolution.fetch(url, image=isinstance(content, ImageContent), input_path=input_path)
            updates: dict[str, Any] = {"url": fetched.uri, "public_url": None}
            if not content.filename and fetched.filename:
                updates["filename"] = fetched.filename
            prepared = await original(content=content.model_copy(update=updates), path=path, context=context)
            resolution.rewrites[content.url] = fetched.uri
            return prepared
        prepared = await original(content=content, path=path, context=context)
        if url.startswith("data:") and getattr(prepared, "url", None) != content.url:
            resolution.rewrites[content.url] = prepared.url
        return prepared

    prepare_url_content._pipelex_server_hooked = True  # type: ignore[attr-defined]
    input_normalizer._prepare_url_content = prepare_url_content  # type: ignore[assignment]
