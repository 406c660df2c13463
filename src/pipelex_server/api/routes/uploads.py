"""Uploads: a file stored for its caller, usable as a Document or Image input through its pipelex-storage:// URI."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Query, Response, UploadFile
from pydantic import BaseModel, Field

from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.schemas import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"])

UploadId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The upload's id")]


class UploadDocument(BaseModel):
    upload_id: str
    uri: str = Field(description="The pipelex-storage:// URI to pass as an input's url (usable by this caller only).")
    filename: str | None = Field(description="The client's file name, reduced to [A-Za-z0-9._-] (metadata only).")
    content_type: str = Field(
        description="From the bytes; else the part's declared type (unless octet-stream); else the file name's extension; else octet-stream."
    )
    size_bytes: int
    sha256: str
    created_at: str


class UploadList(BaseModel):
    uploads: list[UploadDocument]
    next_cursor: str | None


@router.post(
    "",
    status_code=201,
    response_model=UploadDocument,
    responses=PROBLEM_RESPONSES,
    summary="Store a file (multipart field 'file'); 413 over UPLOAD_MAX_MIB",
)
async def create_upload(
    services: ServicesDep,
    caller: CallerDep,
    response: Response,
    file: Annotated[UploadFile, File(description="The file to store")],
) -> Any:
    try:
        data = await file.read()
    finally:
        await file.close()
    document = await services.uploads.create(caller=caller, data=data, filename=file.filename, declared_type=file.content_type)
    response.headers["Location"] = f"/api/v1/uploads/{document['upload_id']}"
    return document


@router.get("", response_model=UploadList, responses=PROBLEM_RESPONSES, summary="The caller's uploads, newest first")
async def list_uploads(
    services: ServicesDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Any:
    return await services.uploads.list(caller=caller, limit=limit, cursor=cursor)


@router.get("/{upload_id}", response_model=UploadDocument, responses=PROBLEM_RESPONSES, summary="An upload's record")
async def get_upload(services: ServicesDep, caller: CallerDep, upload_id: UploadId) -> Any:
    return await services.uploads.get(caller=caller, upload_id=upload_id)


@router.delete("/{upload_id}", status_code=204, responses=PROBLEM_RESPONSES, summary="Remove an upload and its bytes")
async def delete_upload(services: ServicesDep, caller: CallerDep, upload_id: UploadId) -> Response:
    await services.uploads.delete(caller=caller, upload_id=upload_id)
    return Response(status_code=204)
