"""Public routes: liveness, readiness, versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pipelex_server.api.deps import ServicesDep
from pipelex_server.api.schemas import HealthResponse, VersionResponse
from pipelex_server.version import __version__

router = APIRouter(tags=["health"])


@router.get("/", summary="Service banner")
async def root() -> dict[str, str]:
    return {"message": "Pipelex API", "name": "pipelex-server", "version": __version__}


@router.get("/health", response_model=HealthResponse, response_model_exclude_none=True, summary="Liveness: 200 while the process serves")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    response_model=HealthResponse,
    summary="Readiness: run store and warm runtime answer (wait for this, not /health, before sending work)",
    responses={503: {"model": HealthResponse, "description": "A part is not ready; it is named, and Retry-After says when to ask again"}},
)
async def ready(services: ServicesDep) -> JSONResponse:
    checks: dict[str, Any] = {"run_store": await services.runs.store_health()}
    engine = services.engine
    checks["runtime"] = engine.readiness.status
    checks["inference"] = {"live": engine.plan.is_live, "backends": list(engine.plan.enabled)}
    execution = await services.runs.executor_health()  # Temporal's, in Temporal mode
    checks.update(execution)
    healthy = all(checks[name] == "ok" for name in ("run_store", "runtime", *execution))
    if healthy:
        return JSONResponse({"status": "ok", "checks": checks})
    # a load balancer or a client polling this route learns when to ask again
    headers = {"Retry-After": str(engine.readiness.retry_after_seconds)}
    return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503, headers=headers)


@router.get("/api/v1/version", response_model=VersionResponse, summary="Server, runtime and protocol versions")
async def version(services: ServicesDep) -> dict[str, str]:
    return {"implementation": "pipelex-server", "implementation_version": __version__, **services.engine.versions()}
