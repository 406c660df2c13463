"""Run routes (a caller sees only its own runs)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.schemas import PROBLEM_RESPONSES, RUN_ID_PATTERN, RunDocument

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])


@router.get("/{run_id}", response_model=RunDocument, responses=PROBLEM_RESPONSES, summary="A run's state and result")
async def get_run(
    services: ServicesDep,
    caller: CallerDep,
    run_id: str = Path(pattern=RUN_ID_PATTERN),
) -> Any:
    return await services.runs.get_document(caller=caller, run_id=run_id)
