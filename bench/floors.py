"""The floors under issue 13's two unmet targets, measured beside the official server: asserts nothing.

Two of the targets are ratios to the official server that no tuning of ours reaches on a 2-core machine; this bench
measures what the thinnest possible servers get, in the same interleaved rounds, so the gap can be read against them:

  harness     the burst's client straight to the stub (no server): 128 requests, 32 in flight, stub at 500 ms;
  relay N     a raw ASGI app on uvicorn that spends N ms of CPU per request around one call to the stub
              (``bench/floor_app.py:relay``): the burst's wall as a function of a server's CPU per request;
  runtime     the thinnest server around the runtime (``bench/floor_app.py:app``): boots it through our ``Engine``
              (the same warm-up as ours), then one live run per request, nothing else (no HTTP framework, database,
              auth, validation or run records): the floor of spawn -> ready with a warm runtime, and of the burst;
  ours        ``pipelex-server serve`` (ready at ``/health/ready``);
  ... cold    the runtime floor and ours with ``WARM_UP=false``: ready as soon as the runtime is booted, the warm-up's
              work (the provider SDK's imports, the runtime's lazy paths) paid by the first request instead;
  official    ``pipelex-api==0.92.2`` (ready at ``/health``: it boots the runtime and imports the provider SDK on its
              first request, timed here as "first execute").

For each server: spawn -> ready (polled every 20 ms), its CPU at ready, the first live execute right after ready,
the server CPU per run over 20 sequential runs (stub 0 ms), then the burst (stub 500 ms: wall, server CPU per
request). Targets printed: 0.6 x the official burst, 1.0 x the official ready.

Usage::

    .venv/bin/python bench/floors.py                 # 3 rounds (~7 min)
    .venv/bin/python bench/floors.py --rounds 1 --relay-cpu-ms 0 2

Results: ``bench/results/floors-<timestamp>.json`` and ``.md`` (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_core import REPO_ROOT, burst, clean_env, free_port, machine_info, process_cpu_s, stub_and_workdir, write_results  # noqa: E402
from bench_runs import tree_cpu_s  # noqa: E402
from compare_official import EXECUTE, HEADERS, Ours, Theirs, completed  # noqa: E402
from floor_app import RELAY_BODY  # noqa: E402
from tests.support.bundles import seed_request  # noqa: E402

COLD = {"WARM_UP": "false"}  # "cold": ready once the runtime is booted, its warm-up left to the first request


class Spawned:
    """``bench/floor_app.py``'s ``app`` or ``relay`` under uvicorn, ready at ``/ready``."""

    def __init__(self, workdir: Path, *, target: str, env: dict[str, str]) -> None:
        for sub in ("cwd", "data"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(DATA_DIR=str(workdir / "data"), PYTHONPATH=f"{REPO_ROOT / 'src'}:{REPO_ROOT}", **env)
        self.command = [sys.executable, "-m", "uvicorn", f"floor_app:{target}", "--host", "127.0.0.1", "--port", str(self.port)]
        self.command += ["--app-dir", str(BENCH_DIR), "--log-level", "warning"]
        self.cwd = workdir / "cwd"
        self.log = (workdir / "server.log").open("wb")
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def boot(self) -> dict[str, float]:
        import httpx

        started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pid = self.proc.pid
        deadline = started + 120
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command} exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base_url + "/ready", timeout=1).status_code == 200:
                    return {"ready_s": time.perf_counter() - started}
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise RuntimeError("not ready after 120 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


async def timed_burst(url: str, body: dict[str, Any], args: argparse.Namespace, *, check: Any = completed) -> dict[str, Any]:
    """The burst (bench_core.burst): its wall, and how many answers ``check`` accepted."""
    wall, ok = await burst(url, body, headers=HEADERS, total=args.burst_total, in_flight=args.in_flight, check=check)
    return {"burst_wall_s": round(wall, 3), "burst_ok": ok}


def measure_server(side: Any, stub: Any, args: argparse.Namespace, *, runs_pipelines: bool) -> dict[str, Any]:
    import httpx

    result: dict[str, Any] = {}
    try:
        result |= {key: round(value, 3) for key, value in side.boot().items()}
        result["cpu_at_ready_s"] = round(process_cpu_s(side.pid), 3)
        with httpx.Client(base_url=side.base_url, headers=HEADERS, timeout=120) as client:
            if runs_pipelines:
                started = time.perf_counter()
                first = client.post(EXECUTE, json=seed_request())
                result["first_execute_ms"] = round((time.perf_counter() - started) * 1000, 1)
                if not completed(first):
                    raise RuntimeError(f"first execute: {first.status_code} {first.text[:300]}")
                cpu0 = tree_cpu_s(side.pid)
                result["sequential_ok"] = sum(completed(client.post(EXECUTE, json=seed_request())) for _ in range(args.sequential))
                result["cpu_ms_per_run"] = round((tree_cpu_s(side.pid) - cpu0) * 1000 / args.sequential, 2)
        stub.configure(latency_ms=args.latency_ms)
        cpu0 = tree_cpu_s(side.pid)
        result |= asyncio.run(timed_burst(side.base_url + EXECUTE, seed_request(), args))
        result["burst_cpu_ms_per_request"] = round((tree_cpu_s(side.pid) - cpu0) * 1000 / args.burst_total, 2)
    finally:
        stub.configure(latency_ms=0)
        side.stop()
    return result


def median(rounds: list[dict[str, Any]], side: str, key: str) -> float | None:
    values = [r[side][key] for r in rounds if key in r.get(side, {})]
    return statistics.median(values) if values else None


def table(results: dict[str, Any]) -> str:
    rounds = results["rounds"]
    sides = [name for name in results["sides"] if any(name in r for r in rounds)]
    keys = ("ready_s", "cpu_at_ready_s", "first_execute_ms", "cpu_ms_per_run", "burst_wall_s", "burst_cpu_ms_per_request")
    lines = ["| side | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name in sides:
        cells = [median(rounds, name, key) for key in keys]
        lines.append(f"| {name} | " + " | ".join("" if c is None else f"{c:g}" for c in cells) + " |")
    burst = median(rounds, "official", "burst_wall_s")
    ready = median(rounds, "official", "ready_s")
    if burst and ready:
        lines.append("")
        lines.append(f"targets: burst wall <= 0.6 x {burst:g} = {0.6 * burst:.3f} s; spawn -> ready <= 1.0 x {ready:g} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--relay-cpu-ms", type=float, nargs="*", default=[0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--burst-total", type=int, default=128)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--latency-ms", type=int, default=500)
    parser.add_argument("--no-official", action="store_true")
    args = parser.parse_args(argv)
    from tests.support.official_server import install_official

    install = None if args.no_official else install_official()
    relays = [f"relay {cpu:g} ms" for cpu in args.relay_cpu_ms]
    sides = ["harness", *relays, "runtime", "runtime cold", "ours", "ours cold"] + ([] if args.no_official else ["official"])
    results: dict[str, Any] = {"machine": machine_info(), "params": vars(args), "sides": sides, "rounds": []}
    with stub_and_workdir("pipelex-bench-floors-") as (stub, workdir):
        for index in range(args.rounds):
            order = sides[index % len(sides) :] + sides[: index % len(sides)]
            round_result: dict[str, Any] = {"order": order}
            for name in order:
                where = workdir / f"r{index}-{name.replace(' ', '-')}"
                if name == "harness":
                    stub.configure(latency_ms=args.latency_ms)
                    try:
                        url = stub.base_url + "/responses"
                        answered = lambda resp: resp.status_code == 200  # noqa: E731
                        outcome = asyncio.run(timed_burst(url, RELAY_BODY, args, check=answered))
                    finally:
                        stub.configure(latency_ms=0)
                elif name.startswith("relay"):
                    cpu_ms = name.split()[1]
                    side = Spawned(where, target="relay", env={"RELAY_CPU_MS": cpu_ms, "RELAY_TARGET": stub.base_url + "/responses"})
                    outcome = measure_server(side, stub, args, runs_pipelines=False)
                elif name.startswith("runtime"):
                    env = {"OPENAI_BASE_URL": stub.base_url, **(COLD if name.endswith("cold") else {})}
                    outcome = measure_server(Spawned(where, target="app", env=env), stub, args, runs_pipelines=True)
                elif name.startswith("ours"):
                    ours = Ours(where, stub.base_url, 1)
                    ours.server.env.update(COLD if name.endswith("cold") else {})
                    outcome = measure_server(ours, stub, args, runs_pipelines=True)
                elif name == "official":
                    outcome = measure_server(Theirs(where, stub.base_url, install), stub, args, runs_pipelines=True)
                round_result[name] = outcome
                print(f"round {index + 1}/{args.rounds} {name}: {json.dumps(outcome)}", flush=True)
            results["rounds"].append(round_result)
        text = table(results)
        print("\n" + text)
        write_results("floors", results, text)
        return 0


if __name__ == "__main__":
    sys.exit(main())
