"""The blob service behind the protocol's blob routes: which blobs a caller lacks (each with a signed upload target),
and receiving one uploaded blob into the caller's blob store, checked against its hash."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlencode

from pipelex_server.blob_signing import UploadGrant, UploadSigner
from pipelex_server.blobs import BlobStore
from pipelex_server.errors import MTHDS_TYPE_BASE, ApiProblem
from pipelex_server.runs.model import Caller
from pipelex_server.settings import Settings

logger = logging.getLogger(__name__)

UPLOAD_METHOD = "PUT"
UPLOAD_HEADERS = {"content-type": "application/octet-stream"}
BLOBS_FIELD = "blobs"
BODY_FIELD = "body"


def _package_invalid(detail: str, *, reason: str, limit: int, path: str | None = None) -> ApiProblem:
    params: dict[str, Any] = {"reason": reason, "limit": limit}
    if path is not None:
        params["path"] = path
    return ApiProblem(
        status=422,
        code="method.package_invalid",
        title="The method's package breaks a package rule",
        type_uri=MTHDS_TYPE_BASE + "method.package_invalid",
        detail=detail,
        params=params,
    )


def _invalid(detail: str, field: str) -> ApiProblem:
    return ApiProblem(status=422, code="request.invalid", detail=detail, params={"field": field}, location={"path": [field]})


def _too_large(detail: str, *, limit: int, size: int) -> ApiProblem:
    return ApiProblem(status=413, code="request.too_large", detail=detail, params={"limit": limit, "size": size})


class BlobService:
    """The caller-scoped blob routes' behaviour, over the blob store and the upload signer."""

    def __init__(self, *, settings: Settings, blobs: BlobStore, signer: UploadSigner) -> None:
        self.settings = settings
        self.blobs = blobs
        self.signer = signer
        if not signer.shared_key:
            logger.info(
                "BLOB_UPLOAD_SIGNING_KEY is unset: blob upload targets are signed with a key of this process, so an upload "
                "must reach the process that named its target (set the key when several processes serve the API)"
            )

    # ------------------------------------------------------------ POST /v1/blobs/missing

    def _unique_sizes(self, blobs: Sequence[tuple[str, int]]) -> dict[str, int]:
        """Each hash once with its size; one hash listed with two sizes is a 422 naming ``blobs``."""
        sizes: dict[str, int] = {}
        for sha256, size in blobs:
            known = sizes.setdefault(sha256, size)
            if known != size:
                raise _invalid(
                    f"The blob {sha256} is listed twice with different sizes, {known} and {size}: one hash names one set of bytes.",
                    BLOBS_FIELD,
                )
        return sizes

    def _check_limits(self, sizes: dict[str, int]) -> None:
        """The blobs of one request are held to the limits of one method tree, checked on the sizes stated."""
        settings = self.settings
        if len(sizes) > settings.max_method_tree_files:
            raise _package_invalid(
                f"The blobs of this request are {len(sizes)} files, past this server's limit of {settings.max_method_tree_files} "
                "files in a method tree (MAX_METHOD_TREE_FILES).",
                reason="too_many_files",
                limit=settings.max_method_tree_files,
            )
        largest = max(sizes, key=lambda sha256: sizes[sha256], default=None)
        if largest is not None and sizes[largest] > settings.max_method_tree_file_bytes:
            raise _package_invalid(
                f"The blob {largest} holds {sizes[largest]} bytes, past this server's limit of {settings.max_method_tree_file_kib} KiB "
                "for one file of a method tree (MAX_METHOD_TREE_FILE_KIB).",
                reason="file_too_large",
                limit=settings.max_method_tree_file_bytes,
                path=largest,
            )
        total = sum(sizes.values())
        if total > settings.max_method_tree_total_bytes:
            raise _package_invalid(
                f"The blobs of this request hold {total} bytes, past this server's limit of {settings.max_method_tree_total_kib} KiB "
                "for a method tree (MAX_METHOD_TREE_TOTAL_KIB).",
                reason="tree_too_large",
                limit=settings.max_method_tree_total_bytes,
            )

    def upload_url(self, *, request_base_url: str, scope: str, sha256: str, size: int) -> str:
        """The signed target: this server's ``PUT /v1/blobs/{sha256}`` at PUBLIC_BASE_URL, else at the request's base URL."""
        base = (self.settings.public_base_url or request_base_url).rstrip("/")
        return f"{base}/v1/blobs/{sha256}?{urlencode(self.signer.query(scope=scope, sha256=sha256, size=size))}"

    async def missing(self, *, caller: Caller, blobs: Sequence[tuple[str, int]], request_base_url: str) -> list[dict[str, Any]]:
        """Every blob of ``blobs`` (sha256, size) the caller does not hold at that size, in the request's order, each with
        its upload target. Nothing is read but object metadata."""
        sizes = self._unique_sizes(blobs)
        self._check_limits(sizes)
        lacking = set(await self.blobs.missing(caller.scope, sizes))
        return [
            {
                "sha256": sha256,
                "size": size,
                "upload": {
                    "method": UPLOAD_METHOD,
                    "url": self.upload_url(request_base_url=request_base_url, scope=caller.scope, sha256=sha256, size=size),
                    "headers": dict(UPLOAD_HEADERS),
                },
            }
            for sha256, size in sizes.items()
            if sha256 in lacking
        ]

    # ------------------------------------------------------------ PUT /v1/blobs/{sha256}

    def accepted_bytes(self, grant: UploadGrant) -> int:
        """The most bytes an upload under ``grant`` may carry: the size its target was signed for, within the file limit."""
        return min(grant.size, self.settings.max_method_tree_file_bytes)

    def _over_limit(self, grant: UploadGrant, received: int) -> ApiProblem:
        limit = self.accepted_bytes(grant)
        if limit < grant.size:
            detail = (
                f"The blob's body passes {limit} bytes, this server's limit of {self.settings.max_method_tree_file_kib} KiB for one "
                "file of a method tree (MAX_METHOD_TREE_FILE_KIB)."
            )
        else:
            detail = f"The blob's body passes {limit} bytes, the size its upload target was named for: upload exactly the blob's bytes."
        return _too_large(detail, limit=limit, size=received)

    async def receive(self, *, grant: UploadGrant, declared_length: str | None, chunks: AsyncIterator[bytes]) -> bool:
        """Read an upload's body (streamed, never past the size the target allows), check it is the blob the target names,
        and store it under the target's scope. Returns whether the blob was new. Nothing is stored on a refusal."""
        limit = self.accepted_bytes(grant)
        if declared_length is not None and declared_length.isdecimal() and int(declared_length) > limit:
            raise self._over_limit(grant, int(declared_length))
        digest = hashlib.sha256()
        body = bytearray()
        async for chunk in chunks:
            if len(body) + len(chunk) > limit:
                raise self._over_limit(grant, len(body) + len(chunk))
            digest.update(chunk)
            body += chunk
        if len(body) != grant.size:
            raise _invalid(
                f"The body holds {len(body)} bytes, but its upload target was named for a blob of {grant.size}: nothing was stored.",
                BODY_FIELD,
            )
        if digest.hexdigest() != grant.sha256:
            raise _invalid(f"The body's SHA-256 is not {grant.sha256}, the hash the path names: nothing was stored.", BODY_FIELD)
        data = bytes(body)
        new = grant.sha256 in await self.blobs.missing(grant.scope, {grant.sha256: grant.size})
        if new:
            await self.blobs.put(grant.scope, data)
        logger.info(
            "blob upload received: scope=%s sha256=%s bytes=%d stored=%s", grant.scope, grant.sha256, len(data), "new" if new else "held"
        )
        return new
