"""Public routes: liveness, readiness, versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pipelex_server import __version__
from pipelex_server.api.deps import ServicesDep
from pipelex_server.api.schemas import HealthResponse, VersionResponse

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
    summary="Readiness: run store and warm runtime answer",
    responses={503: {"model": HealthResponse, "description": "A part is not ready; it is named"}},
)
async def ready(services: ServicesDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        await services.repository.ping()
        checks["run_store"] = "ok"
    except Exception as exc:
        checks["run_store"] = f"failing: {type(exc).__name__}"
    engine = services.engine
    if engine.boot_error is not None:
        checks["runtime"] = "failing: boot error (see the server log)"
    elif not engine.ready.is_set():
        checks["runtime"] = "starting"
    else:
        checks["runtime"] = "ok"
    checks["inference"] = {"live": engine.plan.is_live, "backends": list(engine.plan.enabled)}
    healthy = checks["run_store"] == "ok" and checks["runtime"] == "ok"
    if services.settings.is_temporal:
        checks["temporal"] = await services.runs.temporal_health()
        healthy = healthy and checks["temporal"] == "ok"
    return JSONResponse({"status": "ok" if healthy else "unavailable", "checks": checks}, status_code=200 if healthy else 503)


@router.get("/api/v1/version", response_model=VersionResponse, summary="Server, runtime and protocol versions")
async def version(services: ServicesDep) -> dict[str, str]:
    return {"implementation": "pipelex-server", "implementation_version": __version__, **services.engine.versions()}
