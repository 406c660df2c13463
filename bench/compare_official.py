"""Ours against the official server (``pipelex-api==0.92.2``), side by side: prints ratios, asserts nothing.

Both servers run on this machine against the same deterministic stub LLM (``tests/support/stub_llm.py``), with
``AUTH_MODE=api_key`` and the same key, and receive the same requests on the same routes (``/v1/execute``,
``/v1/validate``). The official server is installed from the package registry once per machine and cached (see
``tests/support/official_server.py``: ``~/.cache/pipelex-server-tests/official-0.92.2``).

Each round boots a fresh server of each kind, one after the other (the order alternates between rounds, so that
neither side always runs on the warmer or the busier machine), and measures on each:

  boot      spawn -> ready: ours ``/health/ready``, theirs ``/health`` (uvicorn serves once its lifespan has booted);
            ours also spawn -> ``/health`` (alive) and the first live ``/v1/execute`` right after ready (cold request);
  execute   sequential ``POST /v1/execute`` of the seed bundle over one keep-alive connection, stub at 0 ms: median
            latency, and the server's CPU per run (psutil user+system of its process tree, before/after the loop);
            then half as many with the same bundle sent as the official clients send a method, a ``files`` map;
  validate  sequential ``POST /v1/validate`` of the seed bundle (same body): median latency;
  burst     128 requests with 32 in flight against a stub at 500 ms: wall time;
  rss       peak RSS of the server's process tree (polled every 50 ms) from spawn to the burst's end (the measures
            both servers run: the ratio the target is about), and over the whole round (ours: with the /start runs);
  start     (ours only; the official server has no in-process ``/start``) ``POST /api/v1/pipeline/start`` ack
            latency one at a time and at 32 in flight, and the server CPU per started run, its run included.

The table gives, per measure, the median over the rounds of each side and the ratio ours/theirs (lower is better
for ours), next to the issue 13 targets. Numbers on a shared machine are noisy: the load average and the CPU used by
other processes during the bench are printed and stored with the results.

Usage::

    .venv/bin/python bench/compare_official.py             # 3 rounds, full sizes
    .venv/bin/python bench/compare_official.py --quick     # 3 rounds, small sizes (a smoke run, ~3 min)
    .venv/bin/python bench/compare_official.py --rounds 5 --requests 200

Results: ``bench/results/compare-<timestamp>.json`` (every sample) and ``.md`` (the table). ``bench/results/`` is
gitignored: copy the table into docs/benchmarks.md when it is worth keeping. Everything binds to 127.0.0.1; every
subprocess and temporary directory is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_core import (  # noqa: E402
    ForeignCpu,
    RssMonitor,
    ServerProcess,
    burst,
    fmt_load,
    git_state,
    loadavg,
    machine_info,
    stub_and_workdir,
    summarize_ms,
    write_results,
)
from bench_runs import submit_starts, tree_cpu_s, wait_drained  # noqa: E402
from tests.support.bundles import SEED_BUNDLE, seed_request  # noqa: E402

API_KEY = "bench-compare-key"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
EXECUTE = "/v1/execute"
VALIDATE = "/v1/validate"

# issue 13's targets: ratios ours/theirs, or absolute values for ours alone
TARGETS: dict[str, tuple[str, float]] = {
    "execute_median_ms": ("ratio", 0.6),
    "burst_wall_s": ("ratio", 0.6),
    "ready_s": ("ratio", 1.0),
    "peak_rss_shared_mib": ("ratio", 1.0),
    "execute_cpu_ms_per_run": ("abs", 15.0),
    "start_ack_single_median_ms": ("abs", 10.0),
    "start_ack_burst_median_ms": ("abs", 150.0),
    "start_cpu_ms_per_run": ("abs", 18.0),
}
LABELS = {
    "ready_s": "spawn -> ready (ours /health/ready, theirs /health), s",
    "health_s": "spawn -> /health (alive), s",
    "first_execute_ms": "first live /v1/execute after ready, ms",
    "execute_median_ms": "seed /v1/execute median, stub 0 ms, ms",
    "execute_p90_ms": "seed /v1/execute p90, ms",
    "execute_cpu_ms_per_run": "server CPU per seed /v1/execute, ms",
    "files_execute_median_ms": "seed sent as `files` (a tree), /v1/execute median, ms",
    "files_execute_cpu_ms_per_run": "server CPU per `files` /v1/execute, ms",
    "validate_median_ms": "/v1/validate median (same body), ms",
    "burst_wall_s": "128 req / 32 in flight / stub 500 ms, wall s",
    "peak_rss_shared_mib": "peak RSS of the server tree, boot to burst end (the measures both run), MiB",
    "peak_rss_mib": "peak RSS of the server tree, whole round (ours: with the /start runs), MiB",
    "start_ack_single_median_ms": "/start ack median, one at a time, ms",
    "start_ack_burst_median_ms": "/start ack median, 32 in flight, ms",
    "start_cpu_ms_per_run": "server CPU per /start (its run included), ms",
}


# ---------------------------------------------------------------------------------------------------------
# the two servers, behind one small interface
# ---------------------------------------------------------------------------------------------------------


class Side:
    """One server of one round: boot it, give its base URL and pid, stop it."""

    name = ""

    def __init__(self, workdir: Path, stub_url: str) -> None:
        self.workdir = workdir
        self.stub_url = stub_url

    base_url = ""
    pid = 0

    def boot(self) -> dict[str, float]:  # pragma: no cover - interface
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class Ours(Side):
    name = "ours"

    def __init__(self, workdir: Path, stub_url: str, workers: int) -> None:
        super().__init__(workdir, stub_url)
        for sub in ("cwd", "data"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.server = ServerProcess(
            stub_url=stub_url, data_dir=workdir / "data", cwd=workdir / "cwd", log_path=workdir / "server.log", workers=workers
        )
        self.server.env.update(AUTH_MODE="api_key", API_KEY=API_KEY)
        self.base_url = self.server.base_url

    def boot(self) -> dict[str, float]:
        started = self.server.spawn()
        assert self.server.proc is not None
        self.pid = self.server.proc.pid
        return self.server.wait_boot(started, timeout=120)

    def stop(self) -> None:
        self.server.stop()


class Theirs(Side):
    name = "official"

    def __init__(self, workdir: Path, stub_url: str, install: Any) -> None:
        super().__init__(workdir, stub_url)
        from tests.support.official_server import OfficialServer

        class FinePolled(OfficialServer):
            def _wait_ready(self, timeout: float) -> None:  # the same 20 ms polling as ours (the base polls at 100 ms)
                import httpx

                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if self.process is not None and self.process.poll() is not None:
                        raise RuntimeError(f"the official server exited: {self.log()[-1500:]}")
                    try:
                        if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.02)
                raise RuntimeError(f"the official server was not ready after {timeout}s: {self.log()[-1500:]}")

        self.server = FinePolled(install, workdir, openai_base_url=stub_url, api_key=API_KEY)
        self.base_url = self.server.url

    def boot(self) -> dict[str, float]:
        started = time.perf_counter()
        self.server.start(timeout=180)
        assert self.server.process is not None
        self.pid = self.server.process.pid
        return {"ready_s": time.perf_counter() - started}

    def stop(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------------------------------------------------
# measures
# ---------------------------------------------------------------------------------------------------------


def completed(resp: Any) -> bool:
    try:
        document = resp.json()
        # ours names the state `pipeline_state` (and `status`); the official server dumps the runtime's `state`
        return resp.status_code == 200 and "COMPLETED" in (document.get("pipeline_state"), document.get("state"))
    except ValueError:
        return False


def measure_execute(side: Side, *, n: int, warmup: int) -> dict[str, Any]:
    import httpx

    body = seed_request()
    samples: list[float] = []
    failures = 0
    with httpx.Client(base_url=side.base_url, headers=HEADERS, timeout=120) as client:
        t0 = time.perf_counter()
        first = client.post(EXECUTE, json=body)
        first_ms = (time.perf_counter() - t0) * 1000
        if not completed(first):
            raise RuntimeError(f"{side.name}: the seed execute answered {first.status_code}: {first.text[:500]}")
        for _ in range(warmup):
            client.post(EXECUTE, json=body)
        cpu0 = tree_cpu_s(side.pid)
        for _ in range(n):
            t = time.perf_counter()
            resp = client.post(EXECUTE, json=body)
            if completed(resp):
                samples.append(time.perf_counter() - t)
            else:
                failures += 1
        cpu = tree_cpu_s(side.pid) - cpu0
    stats = summarize_ms(samples)
    return {
        "first_execute_ms": round(first_ms, 1),
        "execute_median_ms": stats["median_ms"],
        "execute_p90_ms": stats["p90_ms"],
        "execute_cpu_ms_per_run": round(cpu * 1000 / n, 2),
        "execute_failures": failures,
    }


def measure_execute_files(side: Side, *, n: int) -> dict[str, Any]:
    """The seed method sent as the official clients send one: a `files` map (a method tree), not `mthds_contents`."""
    import httpx

    body = {"files": {"hello.mthds": SEED_BUNDLE}, "inputs": seed_request()["inputs"]}
    samples: list[float] = []
    with httpx.Client(base_url=side.base_url, headers=HEADERS, timeout=120) as client:
        for _ in range(3):
            first = client.post(EXECUTE, json=body)
        if not completed(first):
            raise RuntimeError(f"{side.name}: the files execute answered {first.status_code}: {first.text[:500]}")
        cpu0 = tree_cpu_s(side.pid)
        for _ in range(n):
            t = time.perf_counter()
            if completed(client.post(EXECUTE, json=body)):
                samples.append(time.perf_counter() - t)
        cpu = tree_cpu_s(side.pid) - cpu0
    return {"files_execute_median_ms": summarize_ms(samples)["median_ms"], "files_execute_cpu_ms_per_run": round(cpu * 1000 / n, 2)}


def measure_validate(side: Side, *, n: int) -> dict[str, Any]:
    import httpx

    body = {"mthds_contents": [SEED_BUNDLE]}
    samples: list[float] = []
    with httpx.Client(base_url=side.base_url, headers=HEADERS, timeout=120) as client:
        for _ in range(3):
            client.post(VALIDATE, json=body)
        for _ in range(n):
            t = time.perf_counter()
            resp = client.post(VALIDATE, json=body)
            if resp.status_code == 200:
                samples.append(time.perf_counter() - t)
    return {"validate_median_ms": summarize_ms(samples)["median_ms"]}


async def measure_burst(side: Side, *, total: int, in_flight: int) -> dict[str, Any]:
    url = side.base_url + EXECUTE
    wall, ok = await burst(url, seed_request(), headers=HEADERS, total=total, in_flight=in_flight, check=completed)
    return {"burst_wall_s": round(wall, 3), "burst_completed": ok, "burst_total": total}


async def measure_start(side: Side, *, single: int, total: int, in_flight: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=side.base_url, headers=HEADERS, timeout=300, limits=limits) as client:
        await submit_starts(client, total=4, in_flight=4)  # warm-up
        await wait_drained(client, expected=4, timeout=120, interval=0.2)
        one_by_one = await submit_starts(client, total=single, in_flight=1)
        await wait_drained(client, expected=4 + single, timeout=300, interval=0.2)
        cpu0 = tree_cpu_s(side.pid)
        burst = await submit_starts(client, total=total, in_flight=in_flight)
        await wait_drained(client, expected=4 + single + total, timeout=600, interval=0.2)
        cpu = tree_cpu_s(side.pid) - cpu0
    return {
        "start_ack_single_median_ms": one_by_one["latency"]["median_ms"],
        "start_ack_burst_median_ms": burst["latency"]["median_ms"],
        "start_cpu_ms_per_run": round(cpu * 1000 / total, 2),
        "start_statuses": burst["statuses"],
    }


def run_side(side: Side, stub: Any, args: argparse.Namespace) -> dict[str, Any]:
    monitor = RssMonitor(interval=0.05)
    monitor.start()
    try:
        boot = side.boot()
        monitor.watch(side.pid)
        result: dict[str, Any] = {key: round(value, 3) for key, value in boot.items()}
        stub.configure(latency_ms=0)
        result |= measure_execute(side, n=args.requests, warmup=args.warmup)
        result |= measure_execute_files(side, n=max(1, args.requests // 2))
        result |= measure_validate(side, n=args.validate_requests)
        stub.configure(latency_ms=args.latency_ms)
        result |= asyncio.run(measure_burst(side, total=args.burst_total, in_flight=args.in_flight))
        monitor.sample_now()
        result["peak_rss_shared_mib"] = round(monitor.peak_bytes / (1024 * 1024), 1)  # like for like: before /start
        if isinstance(side, Ours) and not args.no_start:
            stub.configure(latency_ms=0)
            result |= asyncio.run(measure_start(side, single=args.starts_single, total=args.burst_total, in_flight=args.in_flight))
        stub.configure(latency_ms=0)
    finally:
        side.stop()
        monitor.stop()
    result["peak_rss_mib"] = round(monitor.peak_bytes / (1024 * 1024), 1)
    return result


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------


def median_of(rounds: list[dict[str, Any]], side: str, key: str) -> float | None:
    values = [r[side][key] for r in rounds if isinstance(r.get(side, {}).get(key), int | float)]
    return round(statistics.median(values), 3) if values else None


def table(results: dict[str, Any]) -> str:
    rounds = results["rounds"]
    lines = [
        "| measure | ours | official | ours/official | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        ours, theirs = median_of(rounds, "ours", key), median_of(rounds, "official", key)
        if ours is None and theirs is None:
            continue
        ratio = round(ours / theirs, 2) if ours is not None and theirs else None
        kind, bound = TARGETS.get(key, ("", 0.0))
        if kind == "ratio":
            target, met = f"≤ {bound}x", ("" if ratio is None else "yes" if ratio <= bound else "no")
        elif kind == "abs":
            target, met = f"≤ {bound:g}", ("" if ours is None else "yes" if ours <= bound else "no")
        else:
            target, met = "", ""
        lines.append(
            f"| {label} | {'' if ours is None else f'{ours:g}'} | {'' if theirs is None else f'{theirs:g}'} | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} | {target} | {met} |"
        )
    m = results["machine"]
    p = results["params"]
    lines += [
        "",
        f"Medians over {len(rounds)} interleaved rounds. Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"pipelex {m['pipelex']}. Sizes: {p['requests']} sequential executes (+{p['warmup']} warm-up), "
        f"{p['validate_requests']} validates, {p['burst_total']} requests / {p['in_flight']} in flight at "
        f"{p['latency_ms']} ms, {p['starts_single']} single starts.",
        f"Load average before / after: {fmt_load(results['loadavg_before'])} / {fmt_load(results['loadavg_after'])}; "
        f"CPU used by other processes during the bench: {results['foreign_cpu_cores']:.2f} cores "
        f"(hypervisor steal {results['steal_cores']:.2f}).",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Ours vs the official pipelex-api server, interleaved rounds (asserts nothing)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, a fresh server of each kind per round (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--requests", type=int, default=None, help="sequential executes per round (default 200; quick 30)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up executes before those (default 10; quick 3)")
    parser.add_argument("--validate-requests", type=int, default=None, help="validates per round (default 50; quick 10)")
    parser.add_argument("--burst-total", type=int, default=128, help="requests of the burst (default 128)")
    parser.add_argument("--in-flight", type=int, default=32, help="requests in flight in the burst (default 32)")
    parser.add_argument("--latency-ms", type=int, default=500, help="stub latency during the burst (default 500)")
    parser.add_argument("--starts-single", type=int, default=None, help="/start one at a time, ours (default 30; quick 10)")
    parser.add_argument("--no-start", action="store_true", help="skip the /start measures (ours only)")
    parser.add_argument("--workers", type=int, default=1, help="ours: serve --workers N (default 1; the official runs 1)")
    parser.add_argument("--only", choices=("ours", "official"), help="measure one side only (no ratios)")
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 30 if args.quick else 200
    if args.warmup is None:
        args.warmup = 3 if args.quick else 10
    if args.validate_requests is None:
        args.validate_requests = 10 if args.quick else 50
    if args.starts_single is None:
        args.starts_single = 10 if args.quick else 30
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.support.official_server import install_official

    def _interrupted(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)

    install = None if args.only == "ours" else install_official()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "git": git_state(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {key: value for key, value in vars(args).items()},
        "loadavg_before": loadavg(),
        "rounds": [],
    }
    foreign = ForeignCpu()
    with stub_and_workdir("pipelex-bench-compare-") as (stub, workdir):
        for index in range(args.rounds):
            order = ["ours", "official"] if index % 2 == 0 else ["official", "ours"]
            if args.only:
                order = [args.only]
            round_result: dict[str, Any] = {"order": order, "loadavg": loadavg()}
            for name in order:
                where = workdir / f"r{index}-{name}"
                where.mkdir()
                side: Side = Ours(where, stub.base_url, args.workers) if name == "ours" else Theirs(where, stub.base_url, install)
                round_result[name] = run_side(side, stub, args)
                print(f"round {index + 1}/{args.rounds} {name}: {json.dumps(round_result[name])}", flush=True)
            results["rounds"].append(round_result)
        results["loadavg_after"] = loadavg()
        results["foreign_cpu_cores"] = foreign.cores()
        results["steal_cores"] = foreign.steal()
        text = table(results)
        print()
        print(text)
        write_results("compare", results, text)
        return 0


if __name__ == "__main__":
    sys.exit(main())
