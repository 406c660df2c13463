"""Build helpers: an inputs template, the output's shape, and runner scripts for one pipe of a bundle."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from pipelex_server.api.build_schemas import (
    BuildInputsRequest,
    BuildInputsResponse,
    BuildOutputRequest,
    BuildOutputResponse,
    BuildRunnerRequest,
    BuildRunnerResponse,
)
from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.protocol.sources import read_source
from pipelex_server.api.schemas import PROBLEM_RESPONSES
from pipelex_server.engine import build as builder
from pipelex_server.engine.method_tree_files import MethodTreeFiles
from pipelex_server.errors import ApiProblem

router = APIRouter(prefix="/api/v1/build", tags=["build"])


async def _source(raw: Request, body: Any, services: Any, caller: Any) -> MethodTreeFiles | None:
    """The method a build request sends: inline bundles, or any run source (files, bundle_b64, dependencies,
    resources), read as the run routes read it."""
    tree = await read_source(raw, services.engine, caller, body)
    if tree is None and not body.mthds_contents:
        raise ApiProblem(
            status=422,
            code="request.invalid",
            detail="Send the method as mthds_contents, files or bundle_b64.",
            params={"field": "mthds_contents"},
            location={"path": ["body", "mthds_contents"]},
        )
    await services.engine.wait_ready()
    return tree


@router.post(
    "/inputs",
    response_model=BuildInputsResponse,
    responses=PROBLEM_RESPONSES,
    summary="An inputs template for a pipe (JSON usable as-is as `inputs` of /pipeline/execute, or TOML)",
)
async def build_inputs(raw: Request, body: BuildInputsRequest, services: ServicesDep, caller: CallerDep) -> BuildInputsResponse:
    tree = await _source(raw, body, services, caller)
    built = await builder.build_inputs(mthds_contents=body.mthds_contents, pipe_code=body.pipe_code, fmt=body.format, tree=tree)
    return BuildInputsResponse(
        pipe_code=built.pipe_ref, format=body.format, inputs_template=built.template, success=True, message=built.message
    )


@router.post(
    "/output",
    response_model=BuildOutputResponse,
    responses=PROBLEM_RESPONSES,
    summary="A pipe's output as JSON Schema, as an example instance, or as pydantic classes",
)
async def build_output(raw: Request, body: BuildOutputRequest, services: ServicesDep, caller: CallerDep) -> BuildOutputResponse:
    tree = await _source(raw, body, services, caller)
    built = await builder.build_output(mthds_contents=body.mthds_contents, pipe_code=body.pipe_code, fmt=body.format, tree=tree)
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
async def build_runner(raw: Request, body: BuildRunnerRequest, services: ServicesDep, caller: CallerDep) -> BuildRunnerResponse:
    tree = await _source(raw, body, services, caller)
    built = await builder.build_runner(mthds_contents=body.mthds_contents, pipe_code=body.pipe_code, target=body.target, tree=tree)
    return BuildRunnerResponse(python_code=built.python_code, pipe_code=built.pipe_ref, success=True, message=built.message)
