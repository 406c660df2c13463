"""Pipeline execution routes: parse, authorize, call the run service, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from pipelex_server.api.deps import CallerDep, RequestIdDep, ServicesDep
from pipelex_server.api.protocol.requests import tree_fields
from pipelex_server.api.protocol.sources import read_source
from pipelex_server.api.schemas import PROBLEM_RESPONSES, RUN_ID_PATTERN, ExecuteResponse, PipelineRequest, StartResponse
from pipelex_server.engine.method_tree_files import MethodTreeFiles
from pipelex_server.errors import ApiProblem
from pipelex_server.runs.model import RunRequest

router = APIRouter(prefix="/api/v1/pipeline", tags=["pipeline"])


def to_run_request(body: PipelineRequest, tree: MethodTreeFiles | None = None) -> RunRequest:
    if not body.pipe_code and not body.mthds_contents and tree is None:
        raise ApiProblem(
            status=422,
            code="request.pipe_unspecified",
            detail="Give at least one of pipe_code, mthds_contents and files.",
        )
    return RunRequest(
        pipe_code=body.pipe_code,
        mthds_contents=body.mthds_contents,
        inputs=body.inputs,
        output_name=body.output_name,
        output_multiplicity=body.output_multiplicity,
        dynamic_output_concept_ref=body.dynamic_output_concept_ref,
        dry_run=body.dry_run,
        callback_urls=list(body.callback_urls or []),
        **tree_fields(tree),
    )


def resolve_run_id(body: PipelineRequest, idempotency_key: str | None) -> str | None:
    if idempotency_key is None:
        return body.pipeline_run_id
    import re

    if not re.match(RUN_ID_PATTERN, idempotency_key):
        raise ApiProblem(status=422, code="request.invalid", detail="Idempotency-Key must match [A-Za-z0-9_-]{1,128}.")
    if body.pipeline_run_id and body.pipeline_run_id != idempotency_key:
        raise ApiProblem(status=422, code="request.invalid", detail="pipeline_run_id and Idempotency-Key differ.")
    return idempotency_key


@router.post(
    "/execute",
    response_model=ExecuteResponse,
    responses=PROBLEM_RESPONSES,
    summary="Run a pipeline and wait for its result",
)
async def execute(
    raw: Request,
    body: PipelineRequest,
    services: ServicesDep,
    caller: CallerDep,
    request_id: RequestIdDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Any:
    request = to_run_request(body, await read_source(raw, services.engine, caller, body))
    run_id = resolve_run_id(body, idempotency_key)
    answer = await services.runs.execute(caller=caller, request=request, run_id=run_id, request_id=request_id)
    return JSONResponse(answer)  # already plain JSON: skip re-validation against the response model


@router.post(
    "/start",
    status_code=202,
    response_model=StartResponse,
    responses=PROBLEM_RESPONSES,
    summary="Check a pipeline, then run it in the background; follow it under /api/v1/runs/{id}",
)
async def start(
    raw: Request,
    body: PipelineRequest,
    services: ServicesDep,
    caller: CallerDep,
    request_id: RequestIdDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Any:
    request = to_run_request(body, await read_source(raw, services.engine, caller, body))
    run_id = resolve_run_id(body, idempotency_key)
    answer = await services.runs.start(caller=caller, request=request, run_id=run_id, request_id=request_id)
    return JSONResponse(answer, status_code=202, headers={"Location": f"/api/v1/runs/{answer['pipeline_run_id']}"})
