"""Background-run benchmark: prints numbers, asserts nothing.

Measures, against the deterministic stub LLM (``tests/support/stub_llm.py``) and a real
``pipelex-server serve`` subprocess (fresh cwd and ``DATA_DIR`` per server):

  (a) ``POST /api/v1/pipeline/start`` acknowledgement latency: N starts with C in flight, stub at 500 ms; the runs
      execute in the background meanwhile (that load is part of the measurement). Afterwards the backlog is drained
      (its drain time is reported on the side). Side number (a'): a few starts one at a time, before (a).
  (b) completion throughput: R starts submitted as fast as C in flight allow, then wait until all R are terminal,
      once per ``MAX_CONCURRENT_RUNS`` value (a fresh server each). Waiting is not busy polling:
        --wait sse  (default) follow ``GET /api/v1/runs/{id}/events`` for every run, at most S streams at once,
                    each opened as soon as its start is acknowledged and closed after the ``event: end`` frame;
        --wait poll ``GET /api/v1/runs?state=COMPLETED&limit=200`` every 200 ms.
      Wall time = first submit -> last completion, two ways: as the client saw it (last ``end`` frame / poll) and as
      the server recorded it (latest ``finished_at`` in the run list, read after the phase).

Usage::

    .venv/bin/python bench/bench_runs.py                 # full run
    .venv/bin/python bench/bench_runs.py --quick         # smoke run
    .venv/bin/python bench/bench_runs.py --workers 2     # serve --workers 2

Results are printed as a table and written to ``bench/results/runs-<timestamp>.json``.
Everything binds and talks to 127.0.0.1 only; every subprocess and temp dir is cleaned up on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_core import (  # noqa: E402
    ForeignCpu,
    RssMonitor,
    ServerProcess,
    fmt_load,
    git_state,
    loadavg,
    machine_info,
    stub_and_workdir,
    summarize_ms,
    write_results,
)
from tests.support.bundles import seed_request  # noqa: E402

START_PATH = "/api/v1/pipeline/start"
RUNS_PATH = "/api/v1/runs"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "ERROR")

TARGETS = {"ack_median_ms": 15.0}


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (the live ones)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return float("nan")
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def submit_starts(client: Any, *, total: int, in_flight: int, on_ack: Any = None) -> dict[str, Any]:
    """POST /start ``total`` times with ``in_flight`` at once. Latency per acknowledged (202) start."""
    import httpx

    body = seed_request()
    semaphore = asyncio.Semaphore(in_flight)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    ack_states: dict[str, int] = {}
    run_ids: list[str] = []

    async def one() -> None:
        async with semaphore:
            t0 = time.perf_counter()
            try:
                resp = await client.post(START_PATH, json=body)
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                return
            elapsed = time.perf_counter() - t0
            statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1
            if resp.status_code != 202:
                return
            latencies.append(elapsed)
            doc = resp.json()
            ack_states[doc["pipeline_state"]] = ack_states.get(doc["pipeline_state"], 0) + 1
            run_ids.append(doc["pipeline_run_id"])
            if on_ack is not None:
                on_ack(doc["pipeline_run_id"])

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    wall = time.perf_counter() - started
    return {
        "total": total,
        "in_flight": in_flight,
        "wall_s": round(wall, 3),
        "acks_per_s": round(len(latencies) / wall, 1) if wall else float("nan"),
        "statuses": statuses,
        "ack_states": ack_states,
        "run_ids": run_ids,
        "latency": summarize_ms(latencies),
    }


async def list_all(client: Any, *, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Every run of the caller (paged), optionally in one state."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        if cursor:
            params["cursor"] = cursor
        resp = await client.get(RUNS_PATH, params=params)
        resp.raise_for_status()
        page = resp.json()
        out += page["runs"]
        cursor = page["next_cursor"]
        if not cursor:
            return out


async def wait_drained(client: Any, *, expected: int, timeout: float, interval: float = 1.0) -> tuple[float, dict[str, int]]:
    """Poll the run list until ``expected`` runs are terminal; seconds waited and the state counts."""
    started = time.perf_counter()
    counts: dict[str, int] = {}
    while time.perf_counter() - started < timeout:
        docs = await list_all(client)
        counts = {}
        for doc in docs:
            counts[doc["pipeline_state"]] = counts.get(doc["pipeline_state"], 0) + 1
        if sum(counts.get(s, 0) for s in TERMINAL) >= expected:
            return time.perf_counter() - started, counts
        await asyncio.sleep(interval)
    return float("nan"), counts


# ---------------------------------------------------------------------------------------------------------
# (a) acknowledgement latency
# ---------------------------------------------------------------------------------------------------------


async def phase_ack(
    server: ServerProcess, *, total: int, in_flight: int, warmup: int, sequential: int, drain_timeout: float
) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120.0, limits=limits) as client:
        # warm-up: in flight, so that with --workers N every worker loads the bundle once; then let it finish.
        if warmup:
            await submit_starts(client, total=warmup, in_flight=in_flight)
            await wait_drained(client, expected=warmup, timeout=drain_timeout, interval=0.5)
        # side number: one start at a time (the service time of an ack, its runs finishing in the background)
        single = None
        if sequential:
            single = await submit_starts(client, total=sequential, in_flight=1)
            await wait_drained(client, expected=warmup + sequential, timeout=drain_timeout, interval=0.5)
            single.pop("run_ids")
            single["latency"].pop("samples_ms")
        assert server.proc is not None
        cpu0 = tree_cpu_s(server.proc.pid)
        load0 = loadavg()
        t0 = time.perf_counter()
        ack = await submit_starts(client, total=total, in_flight=in_flight)
        cpu_acks = tree_cpu_s(server.proc.pid) - cpu0
        drain_s, counts = await wait_drained(client, expected=warmup + sequential + total, timeout=drain_timeout)
        all_done = time.perf_counter() - t0
        cpu_all = tree_cpu_s(server.proc.pid) - cpu0
    ack["server_cpu_s_during_acks"] = round(cpu_acks, 2)
    ack["server_cpu_s_total"] = round(cpu_all, 2)
    ack["server_cpu_ms_per_run"] = round(cpu_all * 1000 / total, 1)
    ack["drain_all_terminal_s_from_first_start"] = round(all_done, 2) if drain_s == drain_s else float("nan")
    ack["final_states"] = counts
    ack["loadavg_at_start"] = load0
    ack["sequential"] = single
    ack.pop("run_ids")
    return ack


# ---------------------------------------------------------------------------------------------------------
# (b) completion throughput
# ---------------------------------------------------------------------------------------------------------


async def follow_sse(client: Any, run_id: str) -> tuple[str | None, float]:
    """Follow a run's events until ``event: end``; its final state and the perf_counter time the frame arrived."""
    event = None
    async with client.stream("GET", f"{RUNS_PATH}/{run_id}/events") as resp:
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}", time.perf_counter()
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "end":
                seen = time.perf_counter()
                return json.loads(line[5:]).get("pipeline_state"), seen
            elif not line:
                event = None
    return None, time.perf_counter()


async def phase_throughput(server: ServerProcess, *, runs: int, in_flight: int, streams: int, wait: str, timeout: float) -> dict[str, Any]:
    import httpx

    assert server.proc is not None
    submit_limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    stream_limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    stream_timeout = httpx.Timeout(10.0, read=60.0)  # the server sends a keep-alive comment every 15 s
    seen_end: dict[str, tuple[str | None, float]] = {}
    stream_errors: dict[str, int] = {}
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=120.0, limits=submit_limits) as client,
        httpx.AsyncClient(base_url=server.base_url, timeout=stream_timeout, limits=stream_limits) as stream_client,
    ):
        stream_gate = asyncio.Semaphore(streams)
        followers: list[asyncio.Task[None]] = []

        async def follow(run_id: str) -> None:
            async with stream_gate:
                try:
                    seen_end[run_id] = await follow_sse(stream_client, run_id)
                except httpx.HTTPError as exc:
                    stream_errors[type(exc).__name__] = stream_errors.get(type(exc).__name__, 0) + 1

        def on_ack(run_id: str) -> None:
            if wait == "sse":
                followers.append(asyncio.create_task(follow(run_id)))

        load0 = loadavg()
        cpu0 = tree_cpu_s(server.proc.pid)
        t0_wall = time.time()
        t0 = time.perf_counter()
        submit = await submit_starts(client, total=runs, in_flight=in_flight, on_ack=on_ack)
        submitted_s = time.perf_counter() - t0
        run_ids = set(submit["run_ids"])
        polls = 0
        timed_out = False
        last_seen = float("nan")
        if wait == "sse":
            _done, pending = await asyncio.wait(followers, timeout=max(1.0, timeout - submitted_s)) if followers else (set(), set())
            if pending:
                timed_out = True
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=5)
            if seen_end:
                last_seen = max(t for _state, t in seen_end.values()) - t0
        else:
            deadline = t0 + timeout
            while True:
                polls += 1
                resp = await client.get(RUNS_PATH, params={"state": "COMPLETED", "limit": 200})
                resp.raise_for_status()
                completed_now = sum(1 for doc in resp.json()["runs"] if doc["pipeline_run_id"] in run_ids)
                if completed_now >= len(run_ids):
                    last_seen = time.perf_counter() - t0
                    break
                if time.perf_counter() > deadline:
                    timed_out = True
                    break
                await asyncio.sleep(0.2)
        cpu_s = tree_cpu_s(server.proc.pid) - cpu0
        docs = [doc for doc in await list_all(client) if doc["pipeline_run_id"] in run_ids]

    states: dict[str, int] = {}
    for doc in docs:
        states[doc["pipeline_state"]] = states.get(doc["pipeline_state"], 0) + 1
    finished = [parse_iso(doc["finished_at"]) for doc in docs if doc.get("finished_at")]
    server_wall = (max(finished) - t0_wall) if finished else float("nan")
    completed = states.get("COMPLETED", 0)
    sse_states: dict[str, int] = {}
    for state, _t in seen_end.values():
        sse_states[str(state)] = sse_states.get(str(state), 0) + 1
    return {
        "runs": runs,
        "in_flight": in_flight,
        "wait": wait,
        "streams": streams if wait == "sse" else None,
        "submit_wall_s": round(submitted_s, 3),
        "submit_statuses": submit["statuses"],
        "ack_states": submit["ack_states"],
        "ack_latency": {k: v for k, v in submit["latency"].items() if k != "samples_ms"},
        "wall_client_s": round(last_seen, 3),
        "wall_server_s": round(server_wall, 3),
        "runs_per_s_client": round(completed / last_seen, 1) if last_seen == last_seen and last_seen else float("nan"),
        "runs_per_s_server": round(completed / server_wall, 1) if server_wall == server_wall and server_wall else float("nan"),
        "completed": completed,
        "states": states,
        "sse_end_states": sse_states if wait == "sse" else None,
        "stream_errors": stream_errors,
        "polls": polls if wait == "poll" else None,
        "timed_out": timed_out,
        "server_cpu_s": round(cpu_s, 2),
        "server_cpu_ms_per_run": round(cpu_s * 1000 / runs, 1),
        "loadavg_at_start": load0,
    }


# ---------------------------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_server(*, name: str, workdir: Path, stub_url: str, max_concurrent_runs: int, workers: int):
    cwd = workdir / f"{name}-cwd"
    data = workdir / f"{name}-data"
    cwd.mkdir()
    data.mkdir()
    server = ServerProcess(
        stub_url=stub_url,
        data_dir=data,
        cwd=cwd,
        log_path=workdir / f"{name}.log",
        max_concurrent_runs=max_concurrent_runs,
        workers=workers,
    )
    monitor = RssMonitor(interval=0.05)
    try:
        started = server.spawn()
        assert server.proc is not None
        monitor.watch(server.proc.pid)
        monitor.start()
        boot = server.wait_boot(started)
        boot["quiet_s"] = server.wait_quiet(started)
        info = {"boot": {k: round(v, 3) for k, v in boot.items()}, "max_concurrent_runs": max_concurrent_runs}
        yield server, info
        info["peak_rss_mib"] = round(monitor.peak_bytes / (1024 * 1024), 1)
    except Exception:
        print(f"---- {name} server log tail ----", file=sys.stderr)
        print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        server.stop()
        monitor.stop()


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------


def verdict(value: float, target: float) -> str:
    return "MET" if value <= target else "MISSED"


def print_table(results: dict[str, Any]) -> None:
    m = results["machine"]
    p = results["params"]
    print()
    print(f"machine: {m['cpu']} | {m['cores']} cores | Python {m['python']} | pipelex {m['pipelex']} | {m['platform']}")
    print(
        f"params: workers={p['workers']} in_flight={p['in_flight']} stub latency={p['latency_ms']} ms "
        f"(a) starts={p['ack_total']} MAX_CONCURRENT_RUNS={p['max_concurrent_runs']} "
        f"(b) runs={p['runs']} wait={p['wait']} streams={p['streams']} MAX_CONCURRENT_RUNS={p['throughput_max_concurrent_runs']}"
    )
    print(
        f"load average (1/5/15 min): before {fmt_load(results['loadavg_before'])}, after {fmt_load(results['loadavg_after'])}; "
        f"CPU used by other processes during the run: {results['foreign_cpu_cores']:.2f} cores, "
        f"stolen by the hypervisor: {results['steal_cores']:.2f} cores"
    )
    rows: list[tuple[str, str, str, str]] = []
    ack = results["ack"]
    lat = ack["latency"]
    ok = ack["statuses"].get("202", 0) == ack["total"]
    rows.append(
        (
            f"(a) /start ack, {ack['total']} starts / {ack['in_flight']} in flight, median / p90 / p99",
            f"{lat['median_ms']:.2f} / {lat['p90_ms']:.2f} / {lat['p99_ms']:.2f} ms",
            "median <= 15 ms",
            verdict(lat["median_ms"], TARGETS["ack_median_ms"]) if ok else "MISSED (errors)",
        )
    )
    single = ack.get("sequential")
    if single:
        sl = single["latency"]
        rows.append(
            (
                f"(a') /start ack, {single['total']} starts one at a time, median / p90 / p99",
                f"{sl['median_ms']:.2f} / {sl['p90_ms']:.2f} / {sl['p99_ms']:.2f} ms",
                "",
                "",
            )
        )
    rows.append(
        (
            "(a) acks/s; all runs terminal after (from 1st start)",
            f"{ack['acks_per_s']:.0f}/s; {ack['drain_all_terminal_s_from_first_start']:.1f} s",
            "",
            "",
        )
    )
    for tp in results["throughput"]:
        rows.append(
            (
                f"(b) {tp['runs']} runs, MAX_CONCURRENT_RUNS={tp['max_concurrent_runs']}: wall client / server",
                f"{tp['wall_client_s']:.2f} / {tp['wall_server_s']:.2f} s -> {tp['runs_per_s_server']:.1f} runs/s, "
                f"{tp['completed']}/{tp['runs']} COMPLETED",
                "",
                "",
            )
        )
    widths = [max(len(r[i]) for r in [*rows, ("metric", "value", "target", "verdict")]) for i in range(4)]
    header = ("metric", "value", "target", "verdict")
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    if results["anomalies"]:
        print("\nanomalies:")
        for a in results["anomalies"]:
            print(f"  - {a}")


def find_anomalies(results: dict[str, Any]) -> list[str]:
    notes: list[str] = []
    p = results["params"]
    ack = results["ack"]
    if ack["statuses"].get("202", 0) != ack["total"]:
        notes.append(f"(a): statuses {ack['statuses']}")
    if ack["final_states"].get("COMPLETED", 0) != ack["total"] + p["ack_warmup"] + p["ack_sequential"]:
        notes.append(f"(a): final states {ack['final_states']}")
    for tp in results["throughput"]:
        tag = f"(b) MAX_CONCURRENT_RUNS={tp['max_concurrent_runs']}"
        if tp["completed"] != tp["runs"]:
            notes.append(f"{tag}: {tp['completed']}/{tp['runs']} COMPLETED; states {tp['states']}")
        if tp["timed_out"]:
            notes.append(f"{tag}: timed out waiting")
        if tp["stream_errors"]:
            notes.append(f"{tag}: stream errors {tp['stream_errors']}")
        if tp["submit_statuses"].get("202", 0) != tp["runs"]:
            notes.append(f"{tag}: submit statuses {tp['submit_statuses']}")
    return notes


# ---------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark background runs (prints numbers, asserts nothing)")
    parser.add_argument("--workers", type=int, default=1, help="server processes: pipelex-server serve --workers N (default 1)")
    parser.add_argument("--max-concurrent-runs", type=int, default=64, help="MAX_CONCURRENT_RUNS for (a) (default 64)")
    parser.add_argument(
        "--throughput-max-concurrent-runs",
        default="64,200",
        help="comma-separated MAX_CONCURRENT_RUNS values for (b), a fresh server each (default 64,200)",
    )
    parser.add_argument("--in-flight", type=int, default=32, help="/start requests in flight (default 32)")
    parser.add_argument("--latency-ms", type=int, default=500, help="stub latency (default 500)")
    parser.add_argument("--ack-total", type=int, default=None, help="starts measured in (a) (default 640; quick 128)")
    parser.add_argument("--ack-warmup", type=int, default=None, help="warm-up starts before (a), drained first (default 32)")
    parser.add_argument(
        "--ack-sequential", type=int, default=None, help="starts one at a time before (a), a side number (default 40; quick 10)"
    )
    parser.add_argument("--runs", type=int, default=None, help="runs in (b) (default 200; quick 64)")
    parser.add_argument("--wait", choices=("sse", "poll"), default="sse", help="how (b) waits for completion (default sse)")
    parser.add_argument("--streams", type=int, default=64, help="SSE streams open at once in (b) (default 64)")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on each wait, seconds (default 300)")
    parser.add_argument("--quick", action="store_true", help="smaller N for a smoke run")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/runs-<timestamp>.json")
    args = parser.parse_args(argv)
    if args.ack_total is None:
        args.ack_total = 128 if args.quick else 640
    if args.ack_warmup is None:
        args.ack_warmup = args.in_flight
    if args.ack_sequential is None:
        args.ack_sequential = 10 if args.quick else 40
    if args.runs is None:
        args.runs = 64 if args.quick else 200
    args.throughput_mcr = [int(v) for v in str(args.throughput_max_concurrent_runs).split(",") if v.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def _interrupted(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)

    results: dict[str, Any] = {
        "machine": machine_info(),
        "git": git_state(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {
            "workers": args.workers,
            "in_flight": args.in_flight,
            "latency_ms": args.latency_ms,
            "ack_total": args.ack_total,
            "ack_warmup": args.ack_warmup,
            "ack_sequential": args.ack_sequential,
            "max_concurrent_runs": args.max_concurrent_runs,
            "runs": args.runs,
            "wait": args.wait,
            "streams": args.streams,
            "throughput_max_concurrent_runs": args.throughput_mcr,
            "timeout_s": args.timeout,
            "quick": args.quick,
        },
        "targets": TARGETS,
        "loadavg_before": loadavg(),
    }
    foreign = ForeignCpu()
    m = results["machine"]
    print(f"machine: {m['cpu']} | {m['cores']} cores | Python {m['python']} | pipelex {m['pipelex']}", flush=True)
    print(f"workers: {args.workers} | load average before: {fmt_load(results['loadavg_before'])}", flush=True)

    with stub_and_workdir("pipelex-bench-runs-", latency_ms=args.latency_ms) as (stub, workdir):
        print(f"stub LLM: {stub.base_url} ({args.latency_ms} ms)", flush=True)

        # (a) acknowledgement latency
        with running_server(
            name="ack", workdir=workdir, stub_url=stub.base_url, max_concurrent_runs=args.max_concurrent_runs, workers=args.workers
        ) as (server, info):
            print(f"server (a): boot ready {info['boot']['ready_s']:.2f} s, quiet {info['boot']['quiet_s']:.2f} s", flush=True)
            ack = asyncio.run(
                phase_ack(
                    server,
                    total=args.ack_total,
                    in_flight=args.in_flight,
                    warmup=args.ack_warmup,
                    sequential=args.ack_sequential,
                    drain_timeout=args.timeout,
                )
            )
        ack["server"] = info
        results["ack"] = ack
        lat = ack["latency"]
        print(
            f"(a) /start ack: median {lat['median_ms']:.2f} ms, p90 {lat['p90_ms']:.2f}, p99 {lat['p99_ms']:.2f} "
            f"({ack['acks_per_s']:.0f} acks/s, states at ack {ack['ack_states']}); all terminal after "
            f"{ack['drain_all_terminal_s_from_first_start']:.1f} s; server CPU {ack['server_cpu_ms_per_run']:.1f} ms/run",
            flush=True,
        )

        # (b) completion throughput, one fresh server per MAX_CONCURRENT_RUNS
        results["throughput"] = []
        for mcr in args.throughput_mcr:
            with running_server(
                name=f"tp{mcr}", workdir=workdir, stub_url=stub.base_url, max_concurrent_runs=mcr, workers=args.workers
            ) as (server, info):
                tp = asyncio.run(
                    phase_throughput(
                        server, runs=args.runs, in_flight=args.in_flight, streams=args.streams, wait=args.wait, timeout=args.timeout
                    )
                )
            tp["max_concurrent_runs"] = mcr
            tp["server"] = info
            results["throughput"].append(tp)
            print(
                f"(b) MAX_CONCURRENT_RUNS={mcr}: {tp['completed']}/{tp['runs']} COMPLETED, wall client {tp['wall_client_s']:.2f} s / "
                f"server {tp['wall_server_s']:.2f} s -> {tp['runs_per_s_server']:.1f} runs/s "
                f"(submit {tp['submit_wall_s']:.2f} s, server CPU {tp['server_cpu_ms_per_run']:.1f} ms/run)",
                flush=True,
            )

        results["loadavg_after"] = loadavg()
        results["foreign_cpu_cores"] = foreign.cores()
        results["steal_cores"] = foreign.steal()
        results["anomalies"] = find_anomalies(results)
        print_table(results)
        if not args.no_json:
            write_results("runs", results)
        return 0


if __name__ == "__main__":
    sys.exit(main())
