"""Bundle validation and the model deck."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.schemas import PROBLEM_RESPONSES, ValidateRequest, ValidateResponse

router = APIRouter(prefix="/api/v1", tags=["validation"])


@router.post(
    "/validate",
    response_model=ValidateResponse,
    response_model_exclude_none=False,
    responses=PROBLEM_RESPONSES,
    summary="Validate a bundle: a verdict for any text, unparsable TOML included",
)
async def validate(body: ValidateRequest, services: ServicesDep, _caller: CallerDep) -> Any:
    await services.engine.wait_ready()
    return await services.engine.validate(mthds_contents=body.mthds_contents, pipe_code=body.pipe_code)


@router.get("/models", responses=PROBLEM_RESPONSES, summary="The model deck the runtime routes to, and live backends")
async def models(services: ServicesDep, _caller: CallerDep) -> dict[str, Any]:
    await services.engine.wait_ready()
    return await services.engine.models()
