"""GET /metrics: the Prometheus text exposition (every worker's figures with --workers N), behind its own access rule.

Access: with METRICS_TOKEN set, ``Authorization: Bearer <METRICS_TOKEN>``; unset, open under AUTH_MODE=none (the
deployment is already a trusted one) and limited to loopback clients otherwise. METRICS_ENABLED=false: 404.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from fastapi import APIRouter, Request, Response

from pipelex_server.api.deps import ServicesDep
from pipelex_server.errors import ApiProblem
from pipelex_server.observability import metrics
from pipelex_server.settings import AuthMode, Settings

router = APIRouter(tags=["observability"])
logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(request: Request, settings: Settings) -> None:
    if not settings.metrics_enabled:
        raise ApiProblem(status=404, code="route.not_found", detail="Metrics are off (METRICS_ENABLED=false).")
    if settings.metrics_token is not None:
        scheme, _, sent = (request.headers.get("authorization") or "").partition(" ")
        expected = settings.metrics_token.get_secret_value()
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), expected.encode()):
            raise ApiProblem(
                status=401,
                code="auth.invalid_credential",
                detail="Send 'Authorization: Bearer <METRICS_TOKEN>'.",
                headers={"WWW-Authenticate": 'Bearer realm="pipelex-server-metrics"'},
            )
        return
    if settings.auth_mode is not AuthMode.NONE and not _is_loopback(request.client.host if request.client else None):
        raise ApiProblem(
            status=403,
            code="metrics.forbidden",
            detail="Without METRICS_TOKEN, /metrics answers loopback clients only; set METRICS_TOKEN to scrape it remotely.",
        )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, services: ServicesDep) -> Response:
    check_access(request, services.settings)
    gauges: list[tuple[str, str, float]] = []
    try:
        active = await services.usage.active_counts() if services.usage is not None else None
    except Exception:  # the run store is down: the rest of the figures matter most right then
        logger.warning("metrics: the run store did not answer; runs_queued and runs_running are left out", exc_info=True)
        active = None
    if active is not None:
        gauges = [
            ("runs_queued", "Runs queued now (STARTED), across every process sharing the run store", active["STARTED"]),
            ("runs_running", "Runs running now (RUNNING), across every process sharing the run store", active["RUNNING"]),
        ]
    return Response(metrics.exposition(gauges), media_type=CONTENT_TYPE)
