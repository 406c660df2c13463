"""Metrics overhead benchmark: prints numbers, asserts nothing.

Against the deterministic stub LLM (a subprocess) and a real ``pipelex-server serve`` subprocess per mode:

  (a) the seed ``POST /api/v1/pipeline/execute``, sequential over one keep-alive connection: median latency;
  (b) 128 seed ``/execute`` requests with 32 in flight: wall time;
  (c) ``GET /metrics`` after the burst: the median of 5 scrapes, and the exposition's size;

in two modes, alternated round by round so drift on a shared machine hits them alike:

  off  METRICS_ENABLED=false: no HTTP metrics middleware, every hook returns at once;
  on   the default: every request, run, pipe and inference call moves its families.

Tracing is off in both (no OTEL_* variable): bench/bench_tracing.py measures it. LOG_FORMAT is the default (text).
Also prints the cost of the hot hooks in this process. Usage::

    .venv/bin/python bench/bench_observability.py             # 3 rounds
    .venv/bin/python bench/bench_observability.py --quick     # 1 round, fewer requests
    .venv/bin/python bench/bench_observability.py --workers 2 # serve --workers 2 (multiprocess metrics)
    .venv/bin/python bench/bench_observability.py --interleaved  # one in-process app, on/off alternated per request
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from seed_load import EXECUTE, concurrent, scrubbed_environ, sequential  # noqa: E402
from tests.support.bundles import seed_request  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402
from tests.support.stub_llm import StubLLMProcess  # noqa: E402

MODES = ("off", "on")


def scrape(url: str, count: int = 5) -> tuple[float, int]:
    """The median of ``count`` scrapes over one connection (ms), and the exposition's size."""
    import httpx

    timings, size = [], 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.get("/metrics")
            timings.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                return 0.0, 0
            size = len(response.content)
    return statistics.median(timings), size


def measure(mode: str, args: argparse.Namespace, stub_url: str, workdir: Path) -> dict[str, float]:
    env = {"OPENAI_BASE_URL": stub_url, "MAX_CONCURRENT_RUNS": "64", "METRICS_ENABLED": "true" if mode == "on" else "false"}
    server_args = ("--workers", str(args.workers)) if args.workers > 1 else ()
    with ServerProcess(workdir / f"{mode}-{time.monotonic_ns()}", env=env, args=server_args) as server:
        asyncio.run(sequential(server.url, 5))  # warm: first live run, connection pools
        median_ms = asyncio.run(sequential(server.url, args.sequential))
        wall_s = asyncio.run(concurrent(server.url, args.total, args.in_flight))
        scrape_ms, scrape_bytes = scrape(server.url)
    return {"execute_median_ms": median_ms, "burst_wall_s": wall_s, "scrape_ms": scrape_ms, "scrape_bytes": scrape_bytes}


async def interleaved(stub_url: str, workdir: Path, *, pairs: int, bursts: int, total: int, in_flight: int) -> dict[str, dict[str, float]]:
    """One app in this process (ASGI transport, no sockets), metrics switched on and off request by request (and burst
    by burst), so a loaded machine's drift hits both alike. Returns per mode: execute median (ms), burst median (s)."""
    import httpx

    from pipelex_server import create_app
    from pipelex_server.observability import metrics
    from pipelex_server.settings import Settings

    settings = Settings(data_dir=workdir / "interleaved", openai_base_url=stub_url, allowed_hosts=["testserver"], max_concurrent_runs=64)
    app = create_app(settings)  # the HTTP metrics middleware is installed; it checks the switch on every request
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    walls: dict[str, list[float]] = {mode: [] for mode in MODES}
    async with app.router.lifespan_context(app):
        await app.state.services.engine.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as client:
            for _ in range(5):
                assert (await client.post(EXECUTE, json=seed_request())).status_code == 200
            for index in range(pairs * 2):
                mode = MODES[(index + index // 2) % 2]  # off on, on off, off on, ...
                metrics.configure(enabled=mode == "on")
                started = time.perf_counter()
                response = await client.post(EXECUTE, json=seed_request())
                latencies[mode].append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
            slots = asyncio.Semaphore(in_flight)

            async def one() -> None:
                async with slots:
                    assert (await client.post(EXECUTE, json=seed_request())).status_code == 200

            for index in range(bursts * 2):
                mode = MODES[(index + index // 2) % 2]
                metrics.configure(enabled=mode == "on")
                started = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(total)))
                walls[mode].append(time.perf_counter() - started)
    metrics.configure(enabled=True)
    return {
        mode: {"execute_median_ms": statistics.median(latencies[mode]) * 1000, "burst_median_s": statistics.median(walls[mode])}
        for mode in MODES
    }


def hook_costs_ns() -> dict[str, float]:
    """The hot hooks, metrics on, in this process (single-process mode), in nanoseconds per call."""
    from pipelex_server.observability import metrics

    metrics.configure(enabled=True)
    calls = 100_000
    row = {"pipe_code": "summarize", "started_at": None, "created_at": None}
    costs = {
        "http_request": timeit.timeit(lambda: metrics.http_request("POST", EXECUTE, 200, 0.01), number=calls),
        "run_started": timeit.timeit(lambda: metrics.run_started("summarize"), number=calls),
        "run_finished": timeit.timeit(lambda: metrics.run_finished(row, "COMPLETED"), number=calls),
        "llm_call": timeit.timeit(
            lambda: metrics.llm_call(provider="openai", model="gpt", tokens={"input": 10, "output": 5}, cost=0.001), number=calls
        ),
    }
    return {name: seconds / calls * 1e9 for name, seconds in costs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=40, help="sequential /execute per mode and round (a)")
    parser.add_argument("--total", type=int, default=128, help="requests in the burst (b)")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--interleaved", action="store_true", help="only the in-process A/B (metrics on/off per request)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.sequential = 1, 15
    scrubbed_environ()
    if args.interleaved:
        stub = StubLLMProcess().start()
        try:
            with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp:
                found = asyncio.run(interleaved(stub.base_url, Path(tmp), pairs=200, bursts=6, total=args.total, in_flight=args.in_flight))
        finally:
            stub.stop()
        for mode in MODES:
            print(
                f"in-process, metrics {mode:3s}: execute median {found[mode]['execute_median_ms']:.2f} ms, "
                f"{args.total}/{args.in_flight} burst median {found[mode]['burst_median_s']:.3f} s"
            )
        for key in ("execute_median_ms", "burst_median_s"):
            print(f"on vs off, {key}: {(found['on'][key] / found['off'][key] - 1) * 100:+.1f} % (budget: 5 %)")
        print("(a shared, loaded machine: treat differences of a few percent as noise)")
        return
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    stub = StubLLMProcess().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp:
            for round_index in range(args.rounds):
                for mode in MODES if round_index % 2 == 0 else tuple(reversed(MODES)):
                    results[mode].append(measure(mode, args, stub.base_url, Path(tmp)))
                    print(f"round {round_index + 1} metrics {mode:3s} {results[mode][-1]}", flush=True)
    finally:
        stub.stop()
    print(f"\n{'metrics':8s} {'(a) execute median ms':>22s} {'(b) 128/32 wall s':>18s} {'(c) scrape ms':>14s} {'bytes':>8s}")
    summary: dict[str, dict[str, float]] = {}
    for mode in MODES:
        rows = results[mode]
        summary[mode] = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        line = summary[mode]
        print(
            f"{mode:8s} {line['execute_median_ms']:22.1f} {line['burst_wall_s']:18.2f} {line['scrape_ms']:14.1f} {line['scrape_bytes']:8.0f}"
        )
    for key in ("execute_median_ms", "burst_wall_s"):
        delta = (summary["on"][key] / summary["off"][key] - 1) * 100
        print(f"on vs off, {key}: {delta:+.1f} % (budget: 5 %)")
    for name, cost in hook_costs_ns().items():
        print(f"hook {name}: {cost:.0f} ns")
    print("(a shared, loaded machine: treat differences of a few percent as noise)")


if __name__ == "__main__":
    main()
