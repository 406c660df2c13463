"""``pipelex-server worker``: boots the runtime once, then executes runs from the Temporal task queue."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import uuid
from datetime import timedelta

from temporalio.worker import Worker

from pipelex_server.errors import ConfigurationError
from pipelex_server.observability import metrics, tracing
from pipelex_server.settings import Settings

logger = logging.getLogger(__name__)


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    from pipelex_server.composition import build_services
    from pipelex_server.temporal.activities import RunActivities
    from pipelex_server.temporal.workflows import CallbacksWorkflow, RunWorkflow

    if not settings.is_temporal:
        raise ConfigurationError("pipelex-server worker needs EXECUTION_MODE=temporal (and TEMPORAL_ADDRESS)")
    stop = stop or asyncio.Event()
    tracing.configure(role="worker")  # OTEL_* variables (docs/tracing.md)
    services = await build_services(settings)
    stop_metrics = None
    try:
        metrics.configure(enabled=settings.metrics_enabled)
        if settings.metrics_enabled and settings.metrics_port:
            stop_metrics = metrics.serve_http(settings.metrics_host, settings.metrics_port)
        await services.engine.start()
        if services.engine.boot_error is not None:
            raise ConfigurationError(f"the pipelex runtime failed to boot: {services.engine.boot_error}")
        services.runs.start_background(retention=False)
        activities = RunActivities(services.runs.attempts)
        worker = Worker(
            services.temporal,
            task_queue=settings.temporal_task_queue,
            workflows=[RunWorkflow, CallbacksWorkflow],
            activities=[activities.execute_run, activities.settle_run, activities.deliver_callbacks],
            max_concurrent_activities=settings.max_concurrent_runs,
            graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace_seconds),
            # heartbeats reach the server within ~1-2 s, so a cancellation reaches a running activity as fast
            default_heartbeat_throttle_interval=timedelta(seconds=1),
            max_heartbeat_throttle_interval=timedelta(seconds=2),
            identity=f"pipelex-server-worker@{socket.gethostname()}/{uuid.uuid4().hex[:8]}",
        )
        async with worker:
            logger.info(
                "worker ready: task queue %r at %s (namespace %s), up to %d concurrent runs",
                settings.temporal_task_queue,
                settings.temporal_address,
                settings.temporal_namespace,
                settings.max_concurrent_runs,
            )
            await stop.wait()
            logger.info("worker stopping: in-flight runs get %g s to finish", settings.shutdown_grace_seconds)
    finally:
        if stop_metrics is not None:
            stop_metrics()
        await services.close(grace_seconds=0)
        await asyncio.to_thread(tracing.flush)  # the spans still buffered leave before the process ends


def main_worker(settings: Settings) -> None:
    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_worker(settings, stop=stop)

    asyncio.run(run())
