"""Server CPU per run in a burst, A/B between source trees.

Each round boots one server per tree (order flips every round) against one stub LLM, then measures: a sequential
loop of seed ``/v1/execute`` at stub 0 ms (CPU per run), and bursts of 128 executes with 32 in flight at stub 500 ms
(the first burst after the loop, as ``compare_official.py`` runs it, then more: CPU per request and wall). CPU is the
server's process tree's user + sys from /proc (and, over the bursts, per thread: the event loop's vs the others').
Prints medians and spreads; asserts nothing.

Usage::

    .venv/bin/python bench/burst_cpu.py --rounds 3 A=/work/main B=.
    .venv/bin/python bench/burst_cpu.py --rounds 1 --profile /tmp/prof B=.   # py-spy raw (per thread) over bursts 2..N
    .venv/bin/python bench/burst_cpu.py --rounds 1 --profile /tmp/prof --pyspy-args=--gil B=.   # GIL holders only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.bench_core import ServerProcess, burst, interleaved, spread  # noqa: E402
from tests.support.bundles import seed_request  # noqa: E402

API_KEY = "bench-burst-key"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
EXECUTE = "/v1/execute"
PYSPY = "/tmp/pyspy/bin/py-spy"


def tree_cpu_s(pid: int) -> float:
    """user + sys seconds of a process and its live descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pending.extend(int(child) for child in children)
    return total


def thread_cpu_s(pid: int) -> dict[str, float]:
    """user + sys seconds per thread of a process, by thread name (threads of one name summed), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            head, tail = (task / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        name = head.split("(", 1)[1] + ("" if task.name != str(pid) else "[main]")
        out[name + ".user"] = out.get(name + ".user", 0.0) + int(fields[11]) / tick
        out[name + ".sys"] = out.get(name + ".sys", 0.0) + int(fields[12]) / tick
    return out


def completed(resp: Any) -> bool:
    try:
        return resp.status_code == 200 and resp.json().get("pipeline_state") == "COMPLETED"
    except ValueError:
        return False


def sequential(base_url: str, pid: int, n: int) -> dict[str, float]:
    import httpx

    body = seed_request()
    with httpx.Client(base_url=base_url, headers=HEADERS, timeout=120) as client:
        for _ in range(10):
            if not completed(client.post(EXECUTE, json=body)):
                raise RuntimeError("warm-up execute failed")
        cpu0 = tree_cpu_s(pid)
        t0 = time.perf_counter()
        ok = sum(completed(client.post(EXECUTE, json=body)) for _ in range(n))
        wall = time.perf_counter() - t0
        cpu = tree_cpu_s(pid) - cpu0
    return {"seq_cpu_ms": cpu * 1000 / n, "seq_ms": wall * 1000 / n, "seq_ok": ok}


async def measured_burst(base_url: str, pid: int, total: int, in_flight: int) -> dict[str, float]:
    """bench_core's burst of seed executes, with the server tree's CPU per request."""
    cpu0 = tree_cpu_s(pid)
    wall, ok = await burst(base_url + EXECUTE, seed_request(), headers=HEADERS, total=total, in_flight=in_flight, check=completed)
    cpu = tree_cpu_s(pid) - cpu0
    return {"wall_s": wall, "cpu_ms": cpu * 1000 / total, "ok": ok}


def one_round(name: str, tree: Path, stub: Any, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    for sub in ("cwd", "data"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    server = ServerProcess(stub_url=stub.base_url, data_dir=workdir / "data", cwd=workdir / "cwd", log_path=workdir / "server.log")
    server.env.update(AUTH_MODE="api_key", API_KEY=API_KEY, PYTHONPATH=f"{tree / 'src'}:{tree}")
    started = server.spawn()
    profiler: subprocess.Popen[bytes] | None = None
    try:
        server.wait_boot(started, timeout=120)
        assert server.proc is not None
        pid = server.proc.pid
        stub.configure(latency_ms=0)
        result: dict[str, Any] = sequential(server.base_url, pid, args.requests)
        stub.configure(latency_ms=args.latency_ms)
        bursts = []
        threads0 = thread_cpu_s(pid)
        for index in range(args.bursts):
            if index == 1 and args.profile:
                out = Path(args.profile) / f"{name}-{len(list(Path(args.profile).glob(name + '-*')))}.txt"
                profiler = subprocess.Popen(
                    [
                        PYSPY,
                        "record",
                        "-r",
                        "500",
                        "-f",
                        "raw",
                        "--threads",
                        *([] if "--native" in args.pyspy_args else ["--nonblocking"]),
                        *args.pyspy_args.split(),
                        "-p",
                        str(pid),
                        "-o",
                        str(out),
                    ],
                    env={**os.environ, "PYTHONPATH": "/tmp/pyspy"},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)
            bursts.append(asyncio.run(measured_burst(server.base_url, pid, args.total, args.in_flight)))
        if profiler is not None:
            profiler.send_signal(2)
            profiler.wait(timeout=60)
            profiler = None
        threads1 = thread_cpu_s(pid)
        per_thread = {k: (v - threads0.get(k, 0.0)) * 1000 / (args.total * args.bursts) for k, v in threads1.items()}
        print(
            f"{name}: CPU ms per burst request by thread:",
            {k: round(v, 2) for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1]) if v > 0.005},
        )
        stub.configure(latency_ms=0)
        result["burst1_wall_s"] = bursts[0]["wall_s"]
        result["burst1_cpu_ms"] = bursts[0]["cpu_ms"]
        rest = bursts[1:] or bursts
        result["burstN_wall_s"] = statistics.median(b["wall_s"] for b in rest)
        result["burstN_cpu_ms"] = statistics.median(b["cpu_ms"] for b in rest)
        result["burst_failures"] = sum(args.total - b["ok"] for b in bursts)
        return result
    finally:
        if profiler is not None:
            profiler.kill()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+", help="NAME=TREE")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="sequential executes at stub 0 ms")
    parser.add_argument("--bursts", type=int, default=4)
    parser.add_argument("--total", type=int, default=128)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--latency-ms", type=int, default=500)
    parser.add_argument("--profile", default=None, help="directory: py-spy raw profiles of bursts 2..N")
    parser.add_argument("--pyspy-args", default="", help="extra py-spy record arguments, e.g. --native or --gil")
    args = parser.parse_args()
    variants = [(name, Path(tree).resolve()) for name, tree in (item.split("=", 1) for item in args.variants)]
    from tests.support.stub_llm import StubLLMProcess

    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    keep = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    stub = StubLLMProcess(latency_ms=0, python=sys.executable)
    stub.start()
    try:
        for index, name, tree in interleaved(variants, args.rounds):
            result = one_round(name, tree, stub, keep / f"{name}-{index}", args)
            results[name].append(result)
            print(f"round {index} {name:4s} " + " ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True)
    finally:
        stub.stop()
        shutil.rmtree(keep, ignore_errors=True)
    print(f"\n{'':24s}{'median  [min .. max]':>30s}")
    for key in results[variants[0][0]][0]:
        for name, _ in variants:
            print(f"{key:16s} {name:6s} {spread([r[key] for r in results[name]])}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
