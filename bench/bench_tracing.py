"""Tracing overhead benchmark: prints numbers, asserts nothing.

Against the deterministic stub LLM (a subprocess) and a real ``pipelex-server serve`` subprocess per mode:

  (a) the seed ``POST /api/v1/pipeline/execute``, sequential over one keep-alive connection: median latency;
  (b) 128 seed ``/execute`` requests with 32 in flight: wall time;

in three modes, alternated round by round so drift on a shared machine hits them alike:

  baseline  only with ``--baseline-src DIR``: the server code at DIR (e.g. a git worktree of a commit before the
            tracing hooks, its ``src``), to price the hooks themselves;
  off       this tree, no OTEL_* variable: the hooks are in place, tracing is off (the default);
  on        this tree, OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local OTLP/HTTP receiver (every span exported).

Metrics are off in every mode (METRICS_ENABLED=false) so the figures isolate tracing. Also prints the cost of one
hook call with tracing off (in this process). Usage::

    .venv/bin/python bench/bench_tracing.py             # 3 rounds
    .venv/bin/python bench/bench_tracing.py --quick     # 1 round, fewer requests
    .venv/bin/python bench/bench_tracing.py --interleaved  # one in-process app, tracing off/on alternated per request
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from seed_load import EXECUTE, concurrent, scrubbed_environ, sequential  # noqa: E402
from tests.support.bundles import seed_request  # noqa: E402
from tests.support.otlp_receiver import OtlpReceiver  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402
from tests.support.stub_llm import StubLLMProcess  # noqa: E402

MODES = ("baseline", "off", "on")


def measure(mode: str, args: argparse.Namespace, stub_url: str, receiver: OtlpReceiver, workdir: Path) -> dict[str, float]:
    env = {"OPENAI_BASE_URL": stub_url, "METRICS_ENABLED": "false", "MAX_CONCURRENT_RUNS": "64"}
    if mode == "baseline":
        env["PYTHONPATH"] = args.baseline_src
    if mode == "on":  # the exporter's production defaults (a batch every 5 s or 512 spans), not the tests' fast flush
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    spans_before = len(receiver.spans)
    with ServerProcess(workdir / f"{mode}-{time.monotonic_ns()}", env=env) as server:
        asyncio.run(sequential(server.url, 5))  # warm: first live run, connection pools
        median_ms = asyncio.run(sequential(server.url, args.sequential))
        wall_s = asyncio.run(concurrent(server.url, args.total, args.in_flight))
    return {"execute_median_ms": median_ms, "burst_wall_s": wall_s, "spans": len(receiver.spans) - spans_before}


async def interleaved(
    stub_url: str, receiver: OtlpReceiver, workdir: Path, *, pairs: int, bursts: int, total: int, in_flight: int
) -> dict[str, Any]:
    """One app in this process (ASGI transport, no sockets) with tracing configured, switched off and on request by
    request (and burst by burst) through its one switch, so a loaded machine's drift hits both alike. Returns per mode:
    execute median (ms), burst median (s)."""
    import httpx

    from pipelex_server import create_app
    from pipelex_server.observability.tracing import STATE
    from pipelex_server.settings import Settings

    os.environ.update(receiver.env() | {"OTEL_BSP_SCHEDULE_DELAY": "1000"})
    settings = Settings(
        data_dir=workdir / "interleaved",
        openai_base_url=stub_url,
        allowed_hosts=["testserver"],
        max_concurrent_runs=64,
        metrics_enabled=False,
    )
    app = create_app(settings)  # tracing configured from the environment: the middleware checks the switch per request
    assert STATE.enabled
    modes = ("off", "on")
    latencies: dict[str, list[float]] = {mode: [] for mode in modes}
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    async with app.router.lifespan_context(app):
        await app.state.services.engine.wait_ready()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=120) as client:
            for _ in range(5):
                assert (await client.post(EXECUTE, json=seed_request())).status_code == 200
            for index in range(pairs * 2):
                mode = modes[(index + index // 2) % 2]  # off on, on off, off on, ...
                STATE.enabled = mode == "on"
                started = time.perf_counter()
                response = await client.post(EXECUTE, json=seed_request())
                latencies[mode].append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
            slots = asyncio.Semaphore(in_flight)

            async def one() -> None:
                async with slots:
                    assert (await client.post(EXECUTE, json=seed_request())).status_code == 200

            for index in range(bursts * 2):
                mode = modes[(index + index // 2) % 2]
                STATE.enabled = mode == "on"
                started = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(total)))
                walls[mode].append(time.perf_counter() - started)
    STATE.enabled = True
    return {
        mode: {"execute_median_ms": statistics.median(latencies[mode]) * 1000, "burst_median_s": statistics.median(walls[mode])}
        for mode in modes
    }


def hook_cost_ns() -> float:
    """One pipe hook call with tracing off (what every pipe event pays), in nanoseconds."""
    from pipelex_server.observability import tracing_spans
    from pipelex_server.observability.tracing import STATE

    assert not STATE.enabled
    data = {"pipe_code": "summarize", "pipe_type": "PipeLLM"}
    runs = 200_000
    return timeit.timeit(lambda: tracing_spans.pipe_event("pipe_started", data), number=runs) / runs * 1e9


def span_cost_us() -> float:
    """One span started, made current and ended on an SDK provider with a batch processor (its exporter drops the
    batches), in microseconds: what tracing ON adds per span on the request path."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    tracer = provider.get_tracer("bench")

    def one() -> None:
        span = tracer.start_span("pipe summarize", attributes={"pipelex.pipe.code": "summarize", "pipelex.pipe.type": "PipeLLM"})
        token = otel_context.attach(trace.set_span_in_context(span))
        otel_context.detach(token)
        span.end()

    runs = 20_000
    cost = timeit.timeit(one, number=runs) / runs * 1e6
    provider.shutdown()
    return cost


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=40, help="sequential /execute per mode and round (a)")
    parser.add_argument("--total", type=int, default=128, help="requests in the burst (b)")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--baseline-src", default=None, help="PYTHONPATH of a baseline mode (another tree's src); none by default")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--interleaved", action="store_true", help="only the in-process A/B (tracing off/on per request)")
    parser.add_argument("--pairs", type=int, default=200, help="off/on request pairs in --interleaved")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.sequential = 1, 15
    scrubbed_environ()
    if args.interleaved:
        print(f"one pipe hook with tracing off: {hook_cost_ns():.0f} ns")
        stub = StubLLMProcess().start()
        try:
            with OtlpReceiver(decode=False) as receiver, tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
                found = asyncio.run(
                    interleaved(stub.base_url, receiver, Path(tmp), pairs=args.pairs, bursts=6, total=args.total, in_flight=args.in_flight)
                )
                print(f"exports received: {receiver.requests} ({receiver.received_bytes} bytes, not decoded)")
        finally:
            stub.stop()
        for mode in ("off", "on"):
            print(
                f"in-process, tracing {mode:3s}: execute median {found[mode]['execute_median_ms']:.2f} ms, "
                f"{args.total}/{args.in_flight} burst median {found[mode]['burst_median_s']:.3f} s"
            )
        for key in ("execute_median_ms", "burst_median_s"):
            print(f"on vs off, {key}: {(found['on'][key] / found['off'][key] - 1) * 100:+.1f} %")
        print("(a shared, loaded machine: treat differences of a few percent as noise)")
        return
    modes = MODES if args.baseline_src else ("off", "on")
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    stub = StubLLMProcess().start()
    try:
        with OtlpReceiver() as receiver, tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
            for round_index in range(args.rounds):
                for mode in modes if round_index % 2 == 0 else tuple(reversed(modes)):
                    results[mode].append(measure(mode, args, stub.base_url, receiver, Path(tmp)))
                    print(f"round {round_index + 1} {mode:8s} {results[mode][-1]}", flush=True)
    finally:
        stub.stop()
    print(f"\n{'mode':9s} {'(a) execute median ms':>22s} {'(b) 128/32 wall s':>18s} {'spans':>7s}")
    summary: dict[str, dict[str, float]] = {}
    for mode in modes:
        rows = results[mode]
        summary[mode] = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(f"{mode:9s} {summary[mode]['execute_median_ms']:22.1f} {summary[mode]['burst_wall_s']:18.2f} {summary[mode]['spans']:7.0f}")
    reference = "baseline" if args.baseline_src else "off"
    for mode in [mode for mode in modes if mode != reference]:
        for key in ("execute_median_ms", "burst_wall_s"):
            delta = (summary[mode][key] / summary[reference][key] - 1) * 100
            print(f"{mode} vs {reference}, {key}: {delta:+.1f} %")
    print(f"one pipe hook with tracing off: {hook_cost_ns():.0f} ns")
    print(f"one span with tracing on (start, current, end; export off the request path): {span_cost_us():.1f} us")
    print("(a shared, loaded machine: treat differences of a few percent as noise)")


if __name__ == "__main__":
    main()
