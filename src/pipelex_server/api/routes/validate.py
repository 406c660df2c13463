"""Bundle validation and the model deck."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.protocol.sources import read_source, source_present
from pipelex_server.api.schemas import PROBLEM_RESPONSES, ValidateRequest, ValidateResponse
from pipelex_server.errors import ApiProblem

router = APIRouter(prefix="/api/v1", tags=["validation"])


@router.post(
    "/validate",
    response_model=ValidateResponse,
    response_model_exclude_none=False,
    responses=PROBLEM_RESPONSES,
    summary="Validate a bundle: a verdict for any text, unparsable TOML included",
)
async def validate(raw: Request, body: ValidateRequest, services: ServicesDep, caller: CallerDep) -> Any:
    if not source_present(body) and body.mthds_contents is None:
        raise ApiProblem(
            status=422,
            code="request.invalid",
            detail="Send the bundle to validate as mthds_contents, or the method's tree as files.",
            params={"field": "mthds_contents"},
        )
    tree = await read_source(raw, services.engine, caller, body, validating=True)
    await services.engine.wait_ready()
    return await services.engine.validate(mthds_contents=body.mthds_contents, pipe_code=body.pipe_code, tree=tree)


@router.get("/models", responses=PROBLEM_RESPONSES, summary="The model deck the runtime routes to, and live backends")
async def models(services: ServicesDep, _caller: CallerDep) -> dict[str, Any]:
    await services.engine.wait_ready()
    return await services.engine.models()
