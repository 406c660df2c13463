"""The crate and tool routes (Pipelex API extensions the official clients call): `/v1/resolve`, `/v1/pipe-io`,
`/v1/codegen`, `/v1/lint`, `/v1/format` and `GET /v1/models/check`.

Each authenticates its caller (a hash entry of `files` reads only the caller's blobs), waits for the runtime like the
other runtime routes, and hands the work to `engine/codegen.py` or `engine/tools.py`. Problems carry the protocol
members (`ProtocolRoute`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.protocol.tools import (
    CodegenBody,
    CodegenValid,
    CrateBody,
    CrateInvalid,
    FormatAnswer,
    FormatBody,
    LintAnswer,
    LintBody,
    ModelCheckAnswer,
    PipeIOBody,
    PipeIOValid,
    ResolveValid,
    method_of,
)
from pipelex_server.api.routes.protocol import ProtocolRoute
from pipelex_server.api.schemas import PROBLEM_RESPONSES
from pipelex_server.engine import codegen as crates
from pipelex_server.engine import tools
from pipelex_server.errors import ApiProblem

router = APIRouter(prefix="/v1", tags=["pipelex-tools"], route_class=ProtocolRoute)

_VERDICT = "a 200 verdict (is_valid) for any method; a refusal only for a request that cannot get one"


@router.post(
    "/resolve",
    response_model=ResolveValid | CrateInvalid,
    responses=PROBLEM_RESPONSES,
    summary=f"Resolve a method into its normalized library crate: {_VERDICT}",
)
async def resolve(raw: Request, body: CrateBody, services: ServicesDep, caller: CallerDep) -> Any:
    tree = await method_of(raw, services.engine, caller, body)
    await services.engine.wait_ready()
    return JSONResponse(await crates.resolve(tree))


@router.post(
    "/pipe-io",
    response_model=PipeIOValid | CrateInvalid,
    responses=PROBLEM_RESPONSES,
    summary=f"A pipe's I/O contracts, input form and output form, with no dry run: {_VERDICT}",
)
async def pipe_io(raw: Request, body: PipeIOBody, services: ServicesDep, caller: CallerDep) -> Any:
    tree = await method_of(raw, services.engine, caller, body)
    await services.engine.wait_ready()
    answer = await crates.pipe_io(tree, pipe_ref=body.pipe_ref, all_pipes=body.all_pipes, include_files=body.include_files)
    return JSONResponse(answer)


@router.post(
    "/codegen",
    response_model=CodegenValid | CrateInvalid,
    responses=PROBLEM_RESPONSES,
    summary=f"A method's stamped typed artifacts and their codegen.lock: {_VERDICT}",
)
async def codegen(raw: Request, body: CodegenBody, services: ServicesDep, caller: CallerDep) -> Any:
    await services.engine.wait_ready()  # the projection axes are the runtime's
    crates.check_codegen_axes(body.kind, body.target, body.pipe_ref)
    tree = await method_of(raw, services.engine, caller, body)
    return JSONResponse(await crates.codegen(tree, kind=body.kind, target=body.target))


@router.post("/lint", response_model=LintAnswer, responses=PROBLEM_RESPONSES, summary="Lint one .mthds text: 200 with its diagnostics")
async def lint(body: LintBody, _caller: CallerDep) -> Any:
    return JSONResponse(await tools.lint(body.content, source=body.source))


@router.post(
    "/format",
    response_model=FormatAnswer,
    responses=PROBLEM_RESPONSES,
    summary="Format one .mthds text canonically: 200, unchanged with diagnostics when it does not parse",
)
async def format_mthds(body: FormatBody, _caller: CallerDep) -> Any:
    return JSONResponse(await tools.format_text(body.content, options=body.options))


@router.get(
    "/models/check",
    response_model=ModelCheckAnswer,
    responses=PROBLEM_RESPONSES,
    summary="Whether one model reference resolves on this server, as what, to which model: a 200 verdict either way",
)
async def check_model(
    raw: Request,
    services: ServicesDep,
    _caller: CallerDep,
    reference: Annotated[
        str, Query(max_length=4096, description="As a method's `model` field writes it: $preset, @alias, ~waterfall, a handle")
    ],
    category: Annotated[str | None, Query(alias="type", max_length=64, description="Check in this category only")] = None,
) -> Any:
    for name in ("reference", "type"):
        if len(raw.query_params.getlist(name)) > 1:
            raise ApiProblem(
                status=422,
                code="request.invalid",
                detail=f"The `{name}` query parameter accepts a single value.",
                params={"field": name},
                location={"path": ["query", name]},
            )
    await services.engine.wait_ready()
    return JSONResponse(tools.check_model_reference(reference, category))
