"""MTHDS Protocol compatibility routes (contract §7): adapters over the same run service and engine as /api/v1.

A run started here is a run of the run store like any other (visible under /api/v1/runs, and the other way round).
Problems raised under /v1 get the members a protocol reader requires (`domain`, `retry`, `next_step`), so the
official clients raise errors that carry our code and detail.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from mthds.protocol.models import ModelDeck, RunResultStart, ValidationResult, VersionInfo
from mthds.runners.api.models import DictRunResultExecute

from pipelex_server.api.deps import CallerDep, RequestIdDep, ServicesDep
from pipelex_server.api.protocol.answers import (
    RESULTS_RETRY_AFTER_SECONDS,
    execute_answer,
    models_answer,
    parse_artifacts,
    parse_category,
    progress_answer,
    results_answer,
    run_failed_problem,
    start_answer,
    status_answer,
    validate_answer,
    version_answer,
)
from pipelex_server.api.protocol.problems import complete_problem, protocol_refusal
from pipelex_server.api.protocol.requests import (
    ProtocolRunRequest,
    ProtocolValidateRequest,
    refuse_unknown_extensions,
    run_id_for,
    to_run_request,
)
from pipelex_server.api.protocol.responses import ProtocolRunProgress, ProtocolRunRead, ProtocolRunResults
from pipelex_server.api.protocol.sources import read_source, source_present
from pipelex_server.api.schemas import PROBLEM_RESPONSES, RUN_ID_PATTERN
from pipelex_server.errors import ApiProblem, validation_problem
from pipelex_server.runs.progress import protocol_status
from pipelex_server.version import __version__


class ProtocolRoute(APIRoute):
    """Completes every problem raised under /v1 for protocol readers; the app's handler still renders it."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def protocol_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiProblem as raised:
                problem = protocol_refusal(raised)
                complete_problem(problem)
                if problem is raised:
                    raise
                raise problem from raised
            except RequestValidationError as exc:
                problem = protocol_refusal(validation_problem(exc.errors()))
                complete_problem(problem)
                raise problem from exc

        return protocol_handler


router = APIRouter(prefix="/v1", tags=["mthds-protocol"], route_class=ProtocolRoute)

RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="The run's pipeline_run_id")]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]


@router.post("/execute", response_model=DictRunResultExecute, responses=PROBLEM_RESPONSES, summary="MTHDS: run a method and wait")
async def execute(
    raw: Request,
    body: ProtocolRunRequest,
    services: ServicesDep,
    caller: CallerDep,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    refuse_unknown_extensions(body)
    request = to_run_request(body, await read_source(raw, services.engine, caller, body))
    run_id = run_id_for(body, idempotency_key)
    answer = await services.runs.execute(caller=caller, request=request, run_id=run_id, request_id=request_id)
    return JSONResponse(execute_answer(answer))


@router.post(
    "/start",
    status_code=202,
    response_model=RunResultStart,
    responses=PROBLEM_RESPONSES,
    summary="MTHDS: check a method, then run it in the background; follow it under /v1/runs/{id}",
)
async def start(
    raw: Request,
    body: ProtocolRunRequest,
    services: ServicesDep,
    caller: CallerDep,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    refuse_unknown_extensions(body)
    request = to_run_request(body, await read_source(raw, services.engine, caller, body))
    run_id = run_id_for(body, idempotency_key)
    answer = await services.runs.start(caller=caller, request=request, run_id=run_id, request_id=request_id)
    run_id = answer["pipeline_run_id"]
    return JSONResponse(start_answer(answer), status_code=202, headers={"Location": f"/v1/runs/{run_id}/status"})


@router.post(
    "/validate",
    response_model=ValidationResult,
    responses=PROBLEM_RESPONSES,
    summary="MTHDS: validate a method; a 200 verdict (is_valid) for any text, unparsable TOML included",
)
async def validate(raw: Request, body: ProtocolValidateRequest, services: ServicesDep, caller: CallerDep) -> Any:
    refuse_unknown_extensions(body, ignored=tuple(body.model_extra or ()))
    if not source_present(body) and not body.mthds_contents:
        raise ApiProblem(
            status=422,
            code="request.invalid",
            detail="Send the method to validate (as files or mthds_contents).",
            params={"field": "mthds_contents"},
            location={"field": "mthds_contents"},
        )
    tree = await read_source(raw, services.engine, caller, body, validating=True)
    contents = tree.bundle_texts() if tree is not None else body.mthds_contents
    await services.engine.wait_ready()
    verdict = await services.engine.validate(mthds_contents=body.mthds_contents, pipe_code=body.pipe_code, tree=tree)
    markdown = "markdown" in (body.render or [])
    return JSONResponse(validate_answer(verdict, markdown=markdown, views=body.views or (), mthds_contents=contents))


@router.get("/models", response_model=ModelDeck, responses=PROBLEM_RESPONSES, summary="MTHDS: the model deck, optionally one category")
async def models(
    services: ServicesDep,
    _caller: CallerDep,
    category: Annotated[str | None, Query(alias="type", max_length=64)] = None,
) -> Any:
    wanted = parse_category(category)
    await services.engine.wait_ready()
    return models_answer(await services.engine.models(), wanted)


@router.get("/version", response_model=VersionInfo, summary="MTHDS: protocol and server versions (public)")
async def version(services: ServicesDep) -> Any:
    return version_answer(
        implementation_version=__version__, versions=services.engine.versions(), method_tree_limits=services.engine.tree_limits.announced()
    )


@router.get(
    "/runs/{run_id}/status",
    response_model=ProtocolRunRead,
    responses=PROBLEM_RESPONSES,
    summary="A run's status in the SDK's words (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMED_OUT, TERMINATED)",
)
async def run_status(services: ServicesDep, caller: CallerDep, run_id: RunId) -> Any:
    return status_answer(await services.runs.get_document(caller=caller, run_id=run_id))


@router.get(
    "/runs/{run_id}/results",
    response_model=ProtocolRunResults,
    responses={**PROBLEM_RESPONSES, 202: {"description": "The run has not ended; read again after Retry-After"}},
    summary="A run's results: 200 when COMPLETED, 202 while it runs, 409 run.failed when it ended otherwise",
)
async def run_results(
    services: ServicesDep,
    caller: CallerDep,
    run_id: RunId,
    artifacts: Annotated[str | None, Query(max_length=256, description="Comma-separated result artifacts to read")] = None,
) -> Any:
    selection = parse_artifacts(artifacts)
    document = await services.runs.get_document(caller=caller, run_id=run_id)
    if protocol_status(document["pipeline_state"]) in ("PENDING", "RUNNING"):
        retry = str(RESULTS_RETRY_AFTER_SECONDS)
        return JSONResponse(start_answer(document), status_code=202, headers={"Retry-After": retry})
    if document["pipeline_state"] != "COMPLETED":
        raise run_failed_problem(document)
    if document["pipe_output"] is None and document["output_url"]:  # kept in object storage: the SDK gets it whole
        document = {**document, "pipe_output": json.loads(await services.runs.output(caller=caller, run_id=run_id))}
    return JSONResponse(results_answer(document, selection))


@router.get(
    "/runs/{run_id}/progress",
    response_model=ProtocolRunProgress,
    responses=PROBLEM_RESPONSES,
    summary="A run's progress snapshot: every pipe invocation so far, projected from the run's events",
)
async def run_progress(services: ServicesDep, caller: CallerDep, run_id: RunId) -> Any:
    # a snapshot, not a stream; 404 alike for an unknown id and for another caller's run
    document, events = await services.runs.document_and_events(caller=caller, run_id=run_id)
    return progress_answer(document, events)
