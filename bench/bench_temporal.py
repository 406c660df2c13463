"""Temporal-mode benchmark: prints numbers, asserts nothing.

Against the stub LLM in its own process and real processes on loopback (a Temporal dev server, the API, workers):

  (a) throughput: R background runs (``/start``, C in flight) at the stub's 500 ms latency, until all are terminal,
      for in-process mode, Temporal mode with 1 worker process, and with 2 worker processes;
  (b) overhead: the seed bundle through ``/execute``, one at a time, stub latency 0, in-process vs Temporal mode.

Usage::

    .venv/bin/python bench/bench_temporal.py            # 200 runs, 50 sequential executes
    .venv/bin/python bench/bench_temporal.py --quick    # 40 runs, 15 executes

Results are printed and written to ``bench/results/temporal-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from tests.support.bundles import seed_request  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402
from tests.support.stub_llm import StubLLMProcess  # noqa: E402
from tests.support.temporal import TemporalDevServer, WorkerProcess  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "ERROR")


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Deployment:
    def __init__(self, mode: str, workdir: Path, stub_url: str, temporal: TemporalDevServer | None, workers: int) -> None:
        env = {"DATA_DIR": str(workdir / "data"), "OPENAI_BASE_URL": stub_url, "MAX_CONCURRENT_RUNS": "64"}
        if mode == "temporal":
            assert temporal is not None
            env |= {**temporal.env(f"bench-{uuid.uuid4().hex[:6]}"), "SINGLE_HOST": "true"}
        self.api = ServerProcess(workdir / "api", env=env)
        self.workers = [WorkerProcess(workdir / f"worker{index}", env={**self.api.env}) for index in range(workers)]

    def start(self) -> Deployment:
        self.api.start(timeout=120)
        for worker in self.workers:
            worker.start()
        return self

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.api.stop()


async def throughput(url: str, *, runs: int, in_flight: int) -> dict[str, Any]:
    limit = asyncio.Semaphore(in_flight)
    ids = [f"bench-{uuid.uuid4().hex}" for _ in range(runs)]
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def start(run_id: str) -> None:
            async with limit:
                response = await client.post("/api/v1/pipeline/start", json=seed_request(pipeline_run_id=run_id))
                response.raise_for_status()

        first = time.time()
        await asyncio.gather(*(start(run_id) for run_id in ids))
        submitted = time.time() - first

        async def wait(run_id: str) -> dict[str, Any]:
            async with limit:
                async with client.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
                    async for _ in stream.aiter_bytes():
                        pass
                return (await client.get(f"/api/v1/runs/{run_id}")).json()

        documents = await asyncio.gather(*(wait(run_id) for run_id in ids))
    states = [document["pipeline_state"] for document in documents]
    finished = max(parse_iso(document["finished_at"]) for document in documents if document["finished_at"])
    created = min(parse_iso(document["created_at"]) for document in documents)
    wall = finished - created
    return {
        "runs": runs,
        "in_flight": in_flight,
        "completed": states.count("COMPLETED"),
        "submit_s": round(submitted, 2),
        "wall_s": round(wall, 2),
        "runs_per_s": round(runs / wall, 1),
    }


async def sequential_execute(url: str, *, count: int) -> dict[str, Any]:
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for index in range(count + 3):
            started = time.perf_counter()
            response = await client.post("/api/v1/pipeline/execute", json=seed_request())
            response.raise_for_status()
            if index >= 3:  # warm-up
                samples.append((time.perf_counter() - started) * 1000)
    return {
        "n": count,
        "median_ms": round(statistics.median(samples), 1),
        "p90_ms": round(percentile(samples, 0.9), 1),
        "max_ms": round(max(samples), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--latency-ms", type=int, default=500)
    args = parser.parse_args(argv)
    runs = args.runs or (40 if args.quick else 200)
    executes = 15 if args.quick else 50
    results: dict[str, Any] = {"runs": runs, "latency_ms": args.latency_ms, "throughput": {}, "execute_overhead": {}}
    with tempfile.TemporaryDirectory(prefix="bench-temporal-") as tmp:
        workdir = Path(tmp)
        stub = StubLLMProcess().start()
        temporal = TemporalDevServer(workdir / "temporal").start()
        try:
            for name, mode, workers in (
                ("inprocess", "inprocess", 0),
                ("temporal_1_worker", "temporal", 1),
                ("temporal_2_workers", "temporal", 2),
            ):
                deployment = Deployment(mode, workdir / name, stub.base_url, temporal, workers).start()
                try:
                    stub.configure(latency_ms=0)
                    if workers <= 1:
                        results["execute_overhead"][mode] = asyncio.run(sequential_execute(deployment.api.url, count=executes))
                        print(f"{mode:>10} /execute seed, sequential: {results['execute_overhead'][mode]}", flush=True)
                    stub.configure(latency_ms=args.latency_ms)
                    results["throughput"][name] = asyncio.run(throughput(deployment.api.url, runs=runs, in_flight=args.in_flight))
                    print(f"{name:>20} {runs} runs @ {args.latency_ms} ms: {results['throughput'][name]}", flush=True)
                finally:
                    deployment.stop()
        finally:
            temporal.stop()
            stub.stop()
    inprocess, temporal_mode = results["execute_overhead"]["inprocess"], results["execute_overhead"]["temporal"]
    results["execute_overhead"]["temporal_minus_inprocess_median_ms"] = round(temporal_mode["median_ms"] - inprocess["median_ms"], 1)
    print(json.dumps(results, indent=2))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"temporal-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
