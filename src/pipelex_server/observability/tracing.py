"""OpenTelemetry traces: the switch (standard ``OTEL_*`` variables), the process's tracer provider and exporter, and
the context propagation helpers the span hooks (``tracing_spans``, ``tracing_http``, ``tracing_storage``) share.

Off by default. Tracing is ON in a process when ``OTEL_TRACES_EXPORTER`` names ``otlp`` (or ``console``), or, with
``OTEL_TRACES_EXPORTER`` unset, when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keep it off whatever else is set. Spans leave over
OTLP/HTTP (protobuf); every other ``OTEL_*`` variable (endpoint, headers, timeout, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_PROPAGATORS``) is read by the SDK as
documented upstream. When off, no SDK tracer provider is installed, no middleware or interceptor is added, and every
hook returns at its first line (``STATE.enabled``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from pipelex_server.errors import ConfigurationError

logger = logging.getLogger(__name__)

SUPPORTED_EXPORTERS = ("otlp", "console")
DEFAULT_SERVICE_NAMES = {"api": "pipelex-server", "worker": "pipelex-server-worker"}
INSTRUMENTATION_NAME = "pipelex_server"
RUN_CONTEXTS_KEPT = 4096  # the runs whose trace context this process remembers for their callbacks


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables of ``environ`` turn tracing on (see the module docstring).
    ConfigurationError for an exporter or protocol this server cannot serve."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if exporters:
        if exporters == ["none"]:
            return False
        unknown = sorted(set(exporters) - set(SUPPORTED_EXPORTERS))
        if unknown:
            raise ConfigurationError(
                f"OTEL_TRACES_EXPORTER={','.join(exporters)}: this server exports traces with otlp (OTLP/HTTP) or console only"
            )
        on = True
    else:
        on = bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip() or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())
    if on:
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        ).strip()
        if protocol != "http/protobuf":
            raise ConfigurationError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: this server exports traces over http/protobuf only")
    return on


@dataclass
class TracingState:
    """The process's tracing: whether it is on, its tracer, and the trace context of the runs it executed lately."""

    enabled: bool = False
    configured: bool = False
    tracer: Any = None
    provider: Any = None
    run_contexts: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = TracingState()


def configure(role: str = "api", environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on in this process when the environment asks for it (once; later calls answer the same).
    ``role`` ("api" or "worker") names the default service. Returns whether tracing is on."""
    with STATE.lock:
        if STATE.configured:
            return STATE.enabled
        environ = os.environ if environ is None else environ
        STATE.configured = True
        if not tracing_requested(environ):
            return False
        STATE.provider = _make_provider(role, environ)
        trace.set_tracer_provider(STATE.provider)
        STATE.tracer = STATE.provider.get_tracer(INSTRUMENTATION_NAME)
        STATE.enabled = True
    logger.info("OpenTelemetry tracing on (service %s)", STATE.provider.resource.attributes.get("service.name"))
    return True


def _make_provider(role: str, environ: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    from pipelex_server.version import __version__

    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):  # neither variable named it
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAMES.get(role, DEFAULT_SERVICE_NAMES["api"])}))
    provider = TracerProvider(resource=resource)
    exporters = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if name.strip()]
    if "otlp" in exporters:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if "console" in exporters:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def flush(timeout_seconds: float = 5.0) -> None:
    """Export the spans still buffered, at most ``timeout_seconds``. Called when the app or the worker stops: uvicorn
    ends its process by re-raising SIGTERM, so the SDK's own exit hook never runs."""
    if STATE.provider is not None:
        STATE.provider.force_flush(timeout_millis=int(timeout_seconds * 1000))


def temporal_interceptors() -> list[Any]:
    """The Temporal client's interceptors: with tracing on, Temporal's own OpenTelemetry interceptor, which carries the
    trace context in the workflow's and its activities' headers (the worker takes the client's interceptors)."""
    if not STATE.enabled:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(STATE.tracer)]


# ---------------------------------------------------------------- propagation


def extract(carrier: Mapping[str, str]) -> Any:
    """The context a W3C ``traceparent`` (and ``tracestate`` / ``baggage``) carrier names."""
    return propagate.extract(carrier)


def inject(headers: dict[str, str], ctx: Any = None) -> None:
    """Add ``traceparent`` (and ``tracestate``) for the current span, or ``ctx``'s, to outgoing ``headers``."""
    if STATE.enabled:
        propagate.inject(headers, context=ctx)


def remember_run(run_key: str, ctx: Any) -> None:
    """Keep the trace context a run executed in, for its callbacks delivered later from this process."""
    with STATE.lock:
        STATE.run_contexts[run_key] = ctx
        STATE.run_contexts.move_to_end(run_key)
        while len(STATE.run_contexts) > RUN_CONTEXTS_KEPT:
            STATE.run_contexts.popitem(last=False)


def run_context(run_key: str) -> Any:
    """The trace context the run executed in here, else the current one."""
    with STATE.lock:
        remembered = STATE.run_contexts.get(run_key)
    return remembered if remembered is not None else otel_context.get_current()
