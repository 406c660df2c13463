"""Storage addresses as expiring links (docs/files.md): ``/v1/resolve-storage-url`` and its bulk form, and the
unauthenticated download route a local-storage link points to (the link's signature is the permission)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.routes.files import files_of
from pipelex_server.api.schemas import PROBLEM_RESPONSES
from pipelex_server.files.links import content_disposition

router = APIRouter(prefix="/v1", tags=["files"])


class ResolveBody(BaseModel):
    uri: str = Field(min_length=1, max_length=1024)


class BulkResolveBody(BaseModel):
    uris: list[Annotated[str, Field(max_length=1024)]] = Field(max_length=100)


@router.post(
    "/resolve-storage-url", responses=PROBLEM_RESPONSES, summary="One of the caller's pipelex-storage:// addresses as an expiring link"
)
async def resolve_storage_url(request: Request, services: ServicesDep, caller: CallerDep, body: ResolveBody) -> dict[str, Any]:
    return files_of(services).service.resolved(caller, str(request.base_url), body.uri)


@router.post(
    "/resolve-storage-url/bulk",
    responses=PROBLEM_RESPONSES,
    summary="Up to 100 addresses as links, one item per address in order; a bad address is an error on its item",
)
async def resolve_storage_urls(request: Request, services: ServicesDep, caller: CallerDep, body: BulkResolveBody) -> dict[str, Any]:
    return files_of(services).service.resolved_bulk(caller, str(request.base_url), body.uris)


@router.get(
    "/storage/{key:path}",
    responses={**PROBLEM_RESPONSES, 200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes"}},
    summary="Download through a signed link (no credential: the link's signature, bound to the file, caller and expiry)",
)
async def download(
    services: ServicesDep,
    key: Annotated[str, Path(max_length=512)],
    caller: Annotated[str | None, Query(max_length=128)] = None,
    expires: Annotated[str | None, Query(max_length=32)] = None,
    name: Annotated[str | None, Query(max_length=1024)] = None,
    media_type: Annotated[str | None, Query(alias="type", max_length=255)] = None,
    signature: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    params = {"caller": caller, "expires": expires, "name": name, "media_type": media_type, "signature": signature}
    stored, grant = await files_of(services).service.download(key=key, params=params)
    headers = {
        "Content-Disposition": content_disposition(grant.name, grant.media_type),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }
    return Response(stored.data, media_type=grant.media_type, headers=headers)
