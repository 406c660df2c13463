"""`/v1/methods`: the methods catalog in the official SDK's wire shapes (`pipelex_sdk.product_models`): create, list,
read (files as expiring links), rename, write the draft, publish, versions, delete (202, erased in the background),
and `GET /v1/method-files/{sha256}`, the signed link a method's file is read through. Everything is the caller's own:
another caller's id answers the same 404 `pipelex.catalog.not_found` as an unknown id."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ConfigDict, Field

from pipelex_server.api.body_guard import GuardedBody
from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.protocol.answers import validate_answer
from pipelex_server.api.protocol.platform_problems import invalid_cursor, platform_problem
from pipelex_server.api.schemas import PROBLEM_RESPONSES
from pipelex_server.blobs import is_sha256
from pipelex_server.catalog.service import KEEP, BadCursor
from pipelex_server.composition import Catalog, Services
from pipelex_server.engine.method_tree_files import files_document
from pipelex_server.errors import ApiProblem


class PlatformRoute(APIRoute):
    """Words every refusal as the runtime's registry words its code (title, next step); a bad cursor is a 400."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def platform_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except BadCursor as exc:
                raise invalid_cursor() from exc
            except ApiProblem as raised:
                if not raised.code.startswith("pipelex.catalog."):
                    raise
                members = {key: value for key, value in raised.members.items() if key != "params"}
                worded = platform_problem(raised.code, detail=raised.detail, params=raised.members.get("params"), **members)
                worded.headers = raised.headers
                raise worded from raised

        return platform_handler


router = APIRouter(prefix="/v1", tags=["methods catalog"], route_class=PlatformRoute, responses=PROBLEM_RESPONSES)

MethodId = Annotated[str, Path(min_length=1, max_length=128, description="The method's bare catalog id (mt_…)")]


def catalog_of(services: Services) -> Catalog:
    assert services.catalog is not None
    return services.catalog


def base_url(request: Request) -> str:
    """Where links point: PUBLIC_BASE_URL when set (a server behind a proxy), else the URL this request came to."""
    return request.app.state.services.settings.public_base_url or str(request.base_url)


class MethodCreateBody(GuardedBody):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The method's name, 1 to 200 characters, not blank.")
    files: dict[str, Any] | None = Field(
        default=None, description="The draft's method tree (tree path -> file entry); none: an empty draft."
    )
    input_data: dict[str, Any] | None = Field(default=None, description="The editor's form inputs, kept with the draft.")


class DraftBody(GuardedBody):
    model_config = ConfigDict(extra="forbid")

    files: dict[str, Any] | None = Field(description="The draft's whole tree; null empties the draft.")
    input_data: dict[str, Any] | None = Field(default=None, description="Left out: kept; null: cleared; an object: replaced.")
    expected_updated_at: str | None = Field(default=None, description="The draft token last seen: the write is then a compare-and-swap.")


class RenameBody(GuardedBody):
    model_config = ConfigDict(extra="forbid")

    name: str


class PublishBody(GuardedBody):
    model_config = ConfigDict(extra="forbid")

    expected_draft_updated_at: str = Field(description="The draft token last seen (the method's updated_at).")


def _files(raw: bytes, files: dict[str, Any] | None) -> str | None:
    return files_document(raw) if files is not None else None


@router.post("/methods", status_code=201, summary="Create a method; its tree is its draft")
async def create_method(request: Request, body: MethodCreateBody, services: ServicesDep, caller: CallerDep) -> Any:
    methods = catalog_of(services).methods
    created = await methods.create(
        caller, name=body.name, files_document=_files(await request.body(), body.files), input_data=body.input_data
    )
    return JSONResponse(created, status_code=201)


@router.get("/methods", summary="One page of the caller's methods, newest first")
async def list_methods(
    services: ServicesDep,
    caller: CallerDep,
    q: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    published: bool | None = None,
    limit: int | None = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> Any:
    return await catalog_of(services).methods.list(caller, q=q, published=published, limit=limit, cursor=cursor)


@router.get("/methods/{method_id}", summary="A method with its draft's files as expiring links")
async def get_method(request: Request, services: ServicesDep, caller: CallerDep, method_id: MethodId) -> Any:
    return await catalog_of(services).methods.get(caller, method_id, base_url=base_url(request))


@router.patch("/methods/{method_id}", summary="Rename a method (moves no token)")
async def rename_method(body: RenameBody, services: ServicesDep, caller: CallerDep, method_id: MethodId) -> Any:
    return await catalog_of(services).methods.rename(caller, method_id, body.name)


@router.put("/methods/{method_id}/draft", summary="Replace a method's draft; expected_updated_at makes it a compare-and-swap")
async def write_draft(request: Request, body: DraftBody, services: ServicesDep, caller: CallerDep, method_id: MethodId) -> Any:
    input_data = body.input_data if "input_data" in body.model_fields_set else KEEP
    return await catalog_of(services).methods.write_draft(
        caller,
        method_id,
        files_document=_files(await request.body(), body.files),
        input_data=input_data,
        expected=body.expected_updated_at,
    )


@router.post("/methods/{method_id}/publish", summary="Publish the draft as version N+1: published, unchanged or refused")
async def publish_method(body: PublishBody, services: ServicesDep, caller: CallerDep, method_id: MethodId) -> Any:
    outcome = await catalog_of(services).publisher.publish(caller, method_id, body.expected_draft_updated_at)
    answer: dict[str, Any] = {"outcome": outcome.outcome, "method": outcome.method}
    if outcome.version is not None:
        answer["version"] = outcome.version
    if outcome.outcome == "refused":
        answer["reason"] = outcome.reason
        answer["message"] = outcome.message
        answer["validation"] = validate_answer(outcome.verdict, markdown=False)
    return answer


@router.get("/methods/{method_id}/versions", summary="One page of a method's published versions, newest first")
async def list_versions(
    services: ServicesDep,
    caller: CallerDep,
    method_id: MethodId,
    limit: int | None = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> Any:
    return await catalog_of(services).methods.list_versions(caller, method_id, limit=limit, cursor=cursor)


@router.get("/methods/{method_id}/versions/{version}", summary="One published version with its files as expiring links")
async def get_version(
    request: Request, services: ServicesDep, caller: CallerDep, method_id: MethodId, version: Annotated[int, Path(ge=1, le=10**9)]
) -> Any:
    return await catalog_of(services).methods.get_version(caller, method_id, version, base_url=base_url(request))


@router.delete("/methods/{method_id}", status_code=202, summary="Erase a method and everything it produced (in the background)")
async def delete_method(services: ServicesDep, caller: CallerDep, method_id: MethodId) -> Any:
    return JSONResponse(await catalog_of(services).eraser.delete(caller, method_id), status_code=202)


@router.get(
    "/method-files/{sha256}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes"}},
    summary="A method file's bytes, through the signed link a method read gave (no bearer token)",
)
async def method_file(
    services: ServicesDep,
    sha256: str,
    scope: Annotated[str, Query(max_length=128)] = "",
    expires: Annotated[str, Query(max_length=20)] = "",
    signature: Annotated[str, Query(max_length=128)] = "",
) -> Any:
    data = None
    if is_sha256(sha256):
        data = await catalog_of(services).methods.linked_file(scope=scope, sha256=sha256, expires=expires, signature=signature)
    if data is None:
        raise ApiProblem(status=403, code="auth.forbidden", detail="The link is not valid: it expired, or is not one this server signed.")
    return Response(content=data, media_type="application/octet-stream", headers={"Cache-Control": "private, no-store"})
