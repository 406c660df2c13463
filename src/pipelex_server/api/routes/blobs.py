"""The MTHDS Protocol's blob routes: `POST /v1/blobs/missing` (which blobs the caller lacks, each with a signed upload
target) and `PUT /v1/blobs/{sha256}` (one blob's bytes, authorized by its target's signature, not a bearer token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from mthds.protocol.models import SHA256_HEX_PATTERN, TREE_DIGEST_PATTERN, BlobRef, MissingBlobsResult
from pydantic import ConfigDict, Field

from pipelex_server.api.body_guard import GuardedBody
from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.routes.protocol import ProtocolRoute
from pipelex_server.api.schemas import PROBLEM_RESPONSES
from pipelex_server.blob_signing import EXPIRES_PARAM, SCOPE_PARAM, SIGNATURE_PARAM, SIZE_PARAM

router = APIRouter(prefix="/v1", tags=["mthds-protocol"], route_class=ProtocolRoute)

PUT_BLOB_ROUTE = "put_blob"
_PUT_RESPONSES = {status: PROBLEM_RESPONSES[status] for status in (400, 403, 413, 422, 500, 503) if status in PROBLEM_RESPONSES}


class MissingBlobsBody(GuardedBody):
    """The blobs a sender is about to send by hash (each hash once), and optionally the digest of the tree they make."""

    model_config = ConfigDict(extra="allow")

    blobs: list[BlobRef] = Field(default_factory=list, description="The blobs to check, each named by its SHA-256 and size.")
    digest: str | None = Field(default=None, pattern=TREE_DIGEST_PATTERN, description="The tree digest (accepted; not used).")


@router.post(
    "/blobs/missing",
    response_model=MissingBlobsResult,
    responses=PROBLEM_RESPONSES,
    summary="MTHDS: which of these blobs the caller lacks, each with a signed upload target",
)
async def missing_blobs(body: MissingBlobsBody, request: Request, services: ServicesDep, caller: CallerDep) -> Any:
    """Every listed blob the caller does not hold at the stated size, each with where to upload it: this server's
    `PUT /v1/blobs/{sha256}` (at PUBLIC_BASE_URL when set), signed for the caller's scope, the hash and the size, valid
    for BLOB_UPLOAD_URL_TTL_SECONDS. An empty list means nothing to upload. A hash listed with two sizes is a 422
    `request.invalid`; blobs past the method tree limits a 422 `method.package_invalid`."""
    pairs = [(blob.sha256, blob.size) for blob in body.blobs]
    missing = await services.blobs.missing(caller=caller, blobs=pairs, request_base_url=str(request.base_url))
    return {"missing": missing}


@router.put(
    "/blobs/{sha256}",
    name=PUT_BLOB_ROUTE,
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Stored (or already held)"}, **_PUT_RESPONSES},
    summary="MTHDS: upload one blob's bytes to the signed target POST /v1/blobs/missing named",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
async def put_blob(
    request: Request,
    services: ServicesDep,
    sha256: Annotated[str, Path(pattern=SHA256_HEX_PATTERN, description="The SHA-256 of the body, lower-case hex")],
    scope: Annotated[str | None, Query(alias=SCOPE_PARAM, description="The scope the target was signed for")] = None,
    size: Annotated[str | None, Query(alias=SIZE_PARAM, description="The blob's size the target was signed for")] = None,
    expires: Annotated[str | None, Query(alias=EXPIRES_PARAM, description="When the target expires (seconds since the epoch)")] = None,
    signature: Annotated[str | None, Query(alias=SIGNATURE_PARAM, description="The target's signature")] = None,
) -> Response:
    """Store one blob under its SHA-256, in the scope its target was signed for. A target that is missing, forged or
    expired is a 403 `auth.forbidden` (requirement `signed_upload_target`), checked before the body is read; a body
    past the target's size or MAX_METHOD_TREE_FILE_KIB a 413 `request.too_large`; a body that is not the blob the
    path names a 422 `request.invalid` naming `body`, nothing stored. Uploading a blob already held answers 204."""
    grant = services.blobs.signer.grant(sha256=sha256, scope=scope, size=size, expires=expires, signature=signature)
    await services.blobs.receive(grant=grant, declared_length=request.headers.get("content-length"), chunks=request.stream())
    return Response(status_code=204)
