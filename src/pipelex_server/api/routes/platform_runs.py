"""The run records the SDK reads (docs/files.md): a method's run history, one run with what it executed, a run's files."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.routes.files import files_of
from pipelex_server.api.schemas import PROBLEM_RESPONSES, RUN_ID_PATTERN

router = APIRouter(prefix="/v1", tags=["runs"])

RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="The run's pipeline_run_id")]


@router.get("/runs", responses=PROBLEM_RESPONSES, summary="The caller's runs (of one method), newest first: {items, next_cursor}")
async def list_runs(
    services: ServicesDep,
    caller: CallerDep,
    method_id: Annotated[str | None, Query(max_length=128)] = None,
    created_from: Annotated[str | None, Query(max_length=64)] = None,
    created_to: Annotated[str | None, Query(max_length=64)] = None,
    created_by: Annotated[str | None, Query(max_length=16)] = None,
    status: Annotated[list[str] | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> dict[str, Any]:
    return await files_of(services).history.list(
        caller=caller,
        method_id=method_id,
        created_from=created_from,
        created_to=created_to,
        created_by=created_by,
        statuses=status or [],
        limit=limit,
        cursor=cursor,
    )


@router.get("/runs/{run_id}", responses=PROBLEM_RESPONSES, summary="One run's record, with its sources and inputs")
async def get_run(services: ServicesDep, caller: CallerDep, run_id: RunId) -> dict[str, Any]:
    return await files_of(services).history.detail(caller=caller, run_id=run_id)


@router.get("/runs/{run_id}/files", responses=PROBLEM_RESPONSES, summary="A run's files: inputs, outputs, intermediates, with links")
async def run_files(
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    run_id: RunId,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> dict[str, Any]:
    return await files_of(services).run_files.page(caller=caller, base_url=str(request.base_url), run_id=run_id, limit=limit, cursor=cursor)
