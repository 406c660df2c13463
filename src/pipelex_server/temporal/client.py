"""Connecting to Temporal, from the API (submitting runs) and from workers."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from pipelex_server.errors import ConfigurationError
from pipelex_server.observability.tracing import temporal_interceptors
from pipelex_server.settings import Settings

CONNECT_TIMEOUT_SECONDS = 15.0


async def connect(settings: Settings) -> Client:
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    try:
        return await asyncio.wait_for(
            Client.connect(
                settings.temporal_address or "",
                namespace=settings.temporal_namespace,
                api_key=api_key or None,
                tls=settings.temporal_uses_tls,
                interceptors=temporal_interceptors(),  # the trace context crosses to the workers (docs/tracing.md)
            ),
            CONNECT_TIMEOUT_SECONDS,
        )
    except Exception as exc:
        raise ConfigurationError(
            f"cannot reach Temporal at {settings.temporal_address} (namespace {settings.temporal_namespace}): {type(exc).__name__}: {exc}"
        ) from exc
