"""create_app(settings): middleware, routers, error translation and lifespan wiring. Nothing is built at import."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelex_server.api.ack_window import AckWindowMiddleware
from pipelex_server.api.blob_body_limit import BodyLimitExceptBlobUploads
from pipelex_server.api.local_guard import LocalSafetyMiddleware, allowed_host_names
from pipelex_server.api.middleware import RequestIdMiddleware
from pipelex_server.api.routes import (
    blobs,
    build,
    catalog,
    examples,
    files,
    health,
    keys,
    me,
    metrics,
    pipeline,
    platform_runs,
    playground,
    protocol,
    runs,
    storage_links,
    tools,
    unsupported,
    uploads,
    usage,
    validate,
)
from pipelex_server.api.schemas import add_problem_schema
from pipelex_server.composition import build_services
from pipelex_server.errors import PROBLEM_CONTENT_TYPE, ApiProblem, internal_error, validation_problem
from pipelex_server.observability import logs as observability_logs
from pipelex_server.observability import metrics as observability_metrics
from pipelex_server.observability import tracing
from pipelex_server.observability.http import HttpMetricsMiddleware
from pipelex_server.observability.tracing_http import TracingMiddleware, fastapi_telemetry_off
from pipelex_server.settings import AuthMode, Settings
from pipelex_server.version import __version__

logger = logging.getLogger(__name__)

# the routes that acknowledge a background run (runs/priority.py: the runs not begun yet let these go first)
START_PATHS = frozenset({"/api/v1/pipeline/start", "/v1/start"})


def _problem_response(problem: ApiProblem, request: Request) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id")
    return JSONResponse(
        problem.to_document(request_id=request_id),
        status_code=problem.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers or None,
    )


def _install_error_handlers(app: FastAPI) -> None:
    from pipelex_server.api.body_guard import unreadable_body_problem
    from pipelex_server.api.protocol.problems import complete_problem, is_protocol_path, routing_problem

    def render(problem: ApiProblem, request: Request) -> JSONResponse:
        if request.url.path.startswith("/v1/"):  # protocol readers need domain, retry and next_step on every problem
            complete_problem(problem)
        return _problem_response(problem, request)

    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return render(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return render(validation_problem(exc.errors()), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # the framework could not decode the body: say why (depth, bytes, digits)
            return render(unreadable_body_problem(exc.__cause__), request)
        # routing found no route (a 404 before any endpoint ran) or not this method (a 405, with the router's Allow)
        routing = exc.status_code == 405 or (exc.status_code == 404 and "endpoint" not in request.scope)
        if routing and is_protocol_path(request.url.path):  # the official codes, which the SDK reads as "route absent"
            return render(routing_problem(exc.status_code, method=request.method, path=request.url.path, headers=exc.headers), request)
        code = {404: "route.not_found", 405: "route.method_not_allowed"}.get(exc.status_code, "request.invalid")
        allow = {name: value for name, value in (exc.headers or {}).items() if name.lower() == "allow"} if exc.status_code == 405 else {}
        return render(ApiProblem(status=exc.status_code, code=code, detail=str(exc.detail), headers=allow or None), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return render(internal_error(), request)


def _openapi_document(app: FastAPI) -> dict[str, Any]:
    return add_problem_schema(FastAPI.openapi(app))  # FastAPI caches the document; the schema is added once


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings)
        app.state.services = services
        services.boot_in_background()
        services.runs.start_background()
        services.uploads.start_background()
        if services.catalog is not None:
            await services.catalog.eraser.resume()  # erasures a previous process claimed and did not finish
        try:
            yield
        finally:
            await services.close(grace_seconds=settings.shutdown_grace_seconds)
            await asyncio.to_thread(tracing.flush)  # the spans still buffered leave before the process ends

    app = FastAPI(
        title="pipelex-server",
        version=__version__,
        description="REST API server that builds and executes Pipelex (MTHDS) pipelines.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        **fastapi_telemetry_off(),  # one server span per request, ours (docs/tracing.md)
    )
    _install_error_handlers(app)
    app.openapi = functools.partial(_openapi_document, app)  # type: ignore[method-assign]
    routers = (
        *(health.router, pipeline.router, validate.router, runs.router, uploads.router, build.router),
        *(protocol.router, blobs.router, tools.router, usage.router, metrics.router),
        *(me.router, unsupported.router),  # the caller's profile; the hosted-only routes (501, not in the OpenAPI document)
        *(catalog.router, examples.router),  # the methods catalog (docs/platform.md)
        *(files.router, storage_links.router, platform_runs.router),  # files, storage links, run records (docs/files.md)
        *((playground.router,) if settings.playground_enabled else ()),
    )
    for router in routers:
        app.include_router(router)
    app.include_router(keys.router, include_in_schema=settings.auth_mode is AuthMode.KEYS)  # other modes: 501 runtime.unsupported
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Location"],
        )
    app.add_middleware(
        BodyLimitExceptBlobUploads,  # a blob upload bounds its own body (api/routes/blobs.py)
        max_bytes=settings.max_request_body_bytes,
        upload_path="/api/v1/uploads",
        upload_max_bytes=settings.upload_max_bytes,
    )
    if settings.auth_mode is AuthMode.NONE:
        app.add_middleware(
            LocalSafetyMiddleware,
            hosts=allowed_host_names(settings.allowed_hosts, settings.host),
            origins=settings.cors_allow_origins,
        )
    app.add_middleware(AckWindowMiddleware, paths=START_PATHS)  # a /start ack counts from its arrival (runs/priority.py)
    app.add_middleware(RequestIdMiddleware)
    if settings.metrics_enabled:
        app.add_middleware(HttpMetricsMiddleware)  # outermost: every answer counts, a refusal by the guards too
    if tracing.configure(role="api"):  # OTEL_* variables (docs/tracing.md); the trace covers the whole request
        app.add_middleware(TracingMiddleware)
    return app


def app_factory() -> Any:
    """Uvicorn factory entry point (``--factory``): settings from the environment."""
    from pipelex_server.settings import load_settings

    settings = load_settings()
    observability_metrics.configure(enabled=settings.metrics_enabled)  # the process's hooks (runs, pipes, calls)
    observability_logs.install_context_stamps()  # the runtime's log lines carry the request and run ids too
    return create_app(settings)
