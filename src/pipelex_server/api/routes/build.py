"""Build helpers: an inputs template, the output's shape, and runner scripts for one pipe of a bundle."""

from __future__ import annotations

from fastapi import APIRouter

from pipelex_server.api.build_schemas import (
    BuildInputsRequest,
    BuildInputsResponse,
    BuildOutputRequest,
    BuildOutputResponse,
    BuildRunnerRequest,
    BuildRunnerResponse,
)
from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.schemas import PROBLEM_RESPONSES
from pipelex_server.engine import build as builder

router = APIRouter(prefix="/api/v1/build", tags=["build"])


@router.post(
    "/inputs",
    response_model=BuildInputsResponse,
    responses=PROBLEM_RESPONSES,
    summary="An inputs template for a pipe (JSON usable as-is as `inputs` of /pipeline/execute, or TOML)",
)
async def build_inputs(body: BuildInputsRequest, services: ServicesDep, _caller: CallerDep) -> BuildInputsResponse:
    await services.engine.wait_ready()
    built = await builder.build_inputs(mthds_contents=body.mthds_contents, pipe_code=body.pipe_code, fmt=body.format)
    return BuildInputsResponse(
        pipe_code=built.pipe_ref, format=body.format, inputs_template=built.template, success=True, message=built.message
    )


@router.post(
    "/output",
    response_model=BuildOutputResponse,
    responses=PROBLEM_RESPONSES,
    summary="A pipe's output as JSON Schema, as an example instance, or as pydantic classes",
)
async def build_output(body: BuildOutputRequest, services: ServicesDep, _caller: CallerDep) -> BuildOutputResponse:
    await services.engine.wait_ready()
    built = await builder.build_output(mthds_contents=body.mthds_contents, pipe_code=body.pipe_code, fmt=body.format)
    return BuildOutputResponse(
        pipe_code=built.pipe_ref,
        format=body.format,
        concept_code=built.concept_ref,
        multiplicity=built.multiplicity,
        item_count=built.item_count,
        output=built.artefact,
        python_class=built.python_class,
        success=True,
        message=built.message,
    )


@router.post(
    "/runner",
    response_model=BuildRunnerResponse,
    responses=PROBLEM_RESPONSES,
    summary="A ready-to-run Python script for a pipe: over HTTP against this server, or locally with pipelex",
)
async def build_runner(body: BuildRunnerRequest, services: ServicesDep, _caller: CallerDep) -> BuildRunnerResponse:
    await services.engine.wait_ready()
    built = await builder.build_runner(mthds_contents=body.mthds_contents, pipe_code=body.pipe_code, target=body.target)
    return BuildRunnerResponse(python_code=built.python_code, pipe_code=built.pipe_ref, success=True, message=built.message)
