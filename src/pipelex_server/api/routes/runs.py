"""Run routes (a caller sees only its own runs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse

from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.schemas import PROBLEM_RESPONSES, RUN_ID_PATTERN, RunDocument, RunList
from pipelex_server.runs.events import SSE_KEEPALIVE, sse_frame
from pipelex_server.runs.ids import parse_last_event_id

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])

RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="The run's pipeline_run_id")]
State = Literal["STARTED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "ERROR"]


@router.get("", response_model=RunList, responses=PROBLEM_RESPONSES, summary="The caller's runs, newest first")
async def list_runs(
    services: ServicesDep,
    caller: CallerDep,
    state: State | None = None,
    pipe_code: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Any:
    return await services.runs.list_documents(caller=caller, state=state, pipe_code=pipe_code, limit=limit, cursor=cursor)


@router.get("/{run_id}", response_model=RunDocument, responses=PROBLEM_RESPONSES, summary="A run's state and result")
async def get_run(services: ServicesDep, caller: CallerDep, run_id: RunId) -> Any:
    return await services.runs.get_document(caller=caller, run_id=run_id)


@router.post(
    "/{run_id}/cancel",
    status_code=202,
    response_model=RunDocument,
    responses=PROBLEM_RESPONSES,
    summary="Cancel a run; it ends CANCELLED (409 if it already ended)",
)
async def cancel_run(services: ServicesDep, caller: CallerDep, run_id: RunId) -> Any:
    return await services.runs.cancel(caller=caller, run_id=run_id)


@router.get(
    "/{run_id}/output",
    responses={**PROBLEM_RESPONSES, 200: {"content": {"application/json": {}}, "description": "The run's pipe_output"}},
    summary="A completed run's whole output (also when too large to inline in the run document)",
)
async def run_output(services: ServicesDep, caller: CallerDep, run_id: RunId) -> Response:
    return Response(await services.runs.output(caller=caller, run_id=run_id), media_type="application/json")


@router.delete("/{run_id}", status_code=204, responses=PROBLEM_RESPONSES, summary="Remove an ended run and its data")
async def delete_run(services: ServicesDep, caller: CallerDep, run_id: RunId) -> Response:
    await services.runs.delete(caller=caller, run_id=run_id)
    return Response(status_code=204)


@router.post(
    "/{run_id}/callbacks/redeliver",
    status_code=202,
    response_model=RunDocument,
    responses=PROBLEM_RESPONSES,
    summary="Send the completion callbacks again",
)
async def redeliver_callbacks(services: ServicesDep, caller: CallerDep, run_id: RunId) -> Any:
    return await services.runs.redeliver(caller=caller, run_id=run_id)


@router.get(
    "/{run_id}/events",
    responses={**PROBLEM_RESPONSES, 200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
    summary="Live progress as Server-Sent Events; Last-Event-ID resumes",
)
async def run_events(
    services: ServicesDep,
    caller: CallerDep,
    run_id: RunId,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    after = parse_last_event_id(last_event_id)  # 400 request.invalid_header unless an id this server could have sent
    events = await services.runs.follow_events(caller=caller, run_id=run_id, after_seq=after)

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield SSE_KEEPALIVE if event is None else sse_frame(event)
        finally:
            await events.aclose()  # frees the caller's stream slot at once, also when the client went away

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
