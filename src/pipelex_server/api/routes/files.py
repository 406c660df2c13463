"""The platform's files (docs/files.md): the SDK's JSON upload, the caller's file records, links to them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.schemas import PROBLEM_RESPONSES, RUN_ID_PATTERN
from pipelex_server.files.build import Files

router = APIRouter(prefix="/v1", tags=["files"])

FileId = Annotated[str, Path(min_length=1, max_length=128, description="The file's file_id (fl_…)")]
MethodIdQuery = Annotated[str | None, Query(pattern=r"^mt_[A-Za-z0-9_-]{1,120}$", description="A bare catalog id")]
RunIdQuery = Annotated[str | None, Query(pattern=RUN_ID_PATTERN, description="A run's pipeline_run_id")]


def files_of(services: Any) -> Files:
    assert services.files is not None
    return services.files


class UploadBody(BaseModel):
    """The SDK's upload: the file's bytes in base64, its name and type; what it is recorded as."""

    filename: str = Field(min_length=1, max_length=512)
    data: str
    content_type: str = Field(min_length=1, max_length=255)
    kind: str | None = None
    method_id: str | None = Field(default=None, max_length=128)


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str


class LinkTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_id: str | None = Field(default=None, min_length=1, max_length=128)
    uri: str | None = Field(default=None, min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _exactly_one(self) -> LinkTarget:
        if (self.file_id is None) == (self.uri is None):
            raise ValueError("name the file by exactly one of file_id and uri")
        return self


class LinksBody(BaseModel):
    files: list[LinkTarget] = Field(max_length=100)


@router.post("/upload", responses=PROBLEM_RESPONSES, summary="Store a file sent as base64 JSON; answers its uri and file_id")
async def upload(
    body: UploadBody, services: ServicesDep, caller: CallerDep, user_agent: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    return await files_of(services).service.upload(
        caller=caller,
        filename=body.filename,
        data=body.data,
        content_type=body.content_type,
        kind=body.kind,
        method_id=body.method_id,
        user_agent=user_agent,
        check_method=(lambda method_id: services.catalog.methods.check_exists(caller, method_id)) if services.catalog else None,
    )


@router.get("/files", responses=PROBLEM_RESPONSES, summary="The caller's files, newest first: {items, next_cursor}")
async def list_files(
    services: ServicesDep,
    caller: CallerDep,
    method_id: MethodIdQuery = None,
    run_id: RunIdQuery = None,
    created_by: Annotated[str | None, Query(max_length=128)] = None,
    kind: Literal["uploaded", "generated", "test"] | None = None,
    format: Annotated[list[str] | None, Query(max_length=101)] = None,
    media_type: Annotated[list[str] | None, Query(max_length=101)] = None,
    created_from: Annotated[str | None, Query(max_length=64)] = None,
    created_to: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=1000)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> dict[str, Any]:
    files = files_of(services)
    if run_id is not None:
        await files.run_files.settle(await files.run_files.owned_run(caller, run_id))
    else:
        await files.run_files.settle_caller(caller)
    query = {
        "method_id": method_id,
        "run_id": run_id,
        "created_by": created_by,
        "kind": kind,
        "format": format,
        "media_type": media_type,
        "created_from": created_from,
        "created_to": created_to,
        "q": q,
        "limit": limit,
    }
    return await files.service.list(caller=caller, query=query, limit=limit, cursor=cursor)


@router.get("/files/by-uri", responses=PROBLEM_RESPONSES, summary="The caller's records of one pipelex-storage:// address")
async def files_by_uri(
    services: ServicesDep,
    caller: CallerDep,
    uri: Annotated[str, Query(min_length=1, max_length=512)],
    run_id: RunIdQuery = None,
) -> dict[str, Any]:
    files = files_of(services)
    if run_id is not None:
        await files.run_files.owned_run(caller, run_id)
    return await files.service.by_uri(caller=caller, uri=uri)


@router.get("/files/{file_id}", responses=PROBLEM_RESPONSES, summary="One file's record, its methods and a page of its uses")
async def get_file(
    services: ServicesDep,
    caller: CallerDep,
    file_id: FileId,
    uses_limit: Annotated[int, Query(ge=1, le=200)] = 50,
    uses_cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> dict[str, Any]:
    return await files_of(services).service.get(caller=caller, file_id=file_id, uses_limit=uses_limit, uses_cursor=uses_cursor)


@router.patch("/files/{file_id}", responses=PROBLEM_RESPONSES, summary="Rename a file (the name rules of docs/files.md)")
async def rename_file(services: ServicesDep, caller: CallerDep, file_id: FileId, body: RenameBody) -> dict[str, Any]:
    return await files_of(services).service.rename(caller=caller, file_id=file_id, name=body.name)


@router.post("/files/links", responses=PROBLEM_RESPONSES, summary="Fresh expiring links to files, one item (link or error) per file")
async def link_files(request: Request, services: ServicesDep, caller: CallerDep, body: LinksBody) -> dict[str, Any]:
    targets = [target.model_dump() for target in body.files]
    return await files_of(services).service.links(caller=caller, base_url=str(request.base_url), targets=targets)
