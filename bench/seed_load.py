"""The seed load the overhead benchmarks share (bench_observability.py, bench_tracing.py): a scrubbed environment,
sequential seed /execute over one connection, and a burst with N in flight. Prints nothing, asserts the answers."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

from tests.support.bundles import seed_request

EXECUTE = "/api/v1/pipeline/execute"


def scrubbed_environ() -> None:
    for name in list(os.environ):
        if name.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_", "GOOGLE_", "MISTRAL_", "METRICS_", "LOG_", "PROMETHEUS_")) or name in (
            "DATABASE_URL",
            "EXECUTION_MODE",
        ):
            del os.environ[name]
    os.environ["DO_NOT_TRACK"] = "1"


async def sequential(url: str, count: int) -> float:
    import httpx

    latencies = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = await client.post(EXECUTE, json=seed_request())
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return statistics.median(latencies) * 1000


async def concurrent(url: str, total: int, in_flight: int) -> float:
    import httpx

    slots = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one() -> None:
            async with slots:
                response = await client.post(EXECUTE, json=seed_request())
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return time.perf_counter() - started
