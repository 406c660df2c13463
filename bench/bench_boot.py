"""Boot benchmark, A/B: spawn -> ``/health/ready``, the server's CPU at ready, and the first live ``/v1/execute``.

Each variant is a source tree (its ``src`` and root put first on ``PYTHONPATH``); the variants are spawned in turn,
round after round (the order flips every round), against one stub LLM, so they share the machine's noise. Prints
medians and spreads; asserts nothing.

Usage::

    .venv/bin/python bench/bench_boot.py --rounds 6 A=/work/main B=../other-checkout
    .venv/bin/python bench/bench_boot.py --rounds 1 --importtime B=../other-checkout   # also keep -X importtime logs
    .venv/bin/python bench/bench_boot.py --rounds 4 ours=. theirs=official   # the official server, ready at /health
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.bench_core import ServerProcess, interleaved, process_cpu_s, spread  # noqa: E402
from tests.support.bundles import seed_request  # noqa: E402

API_KEY = "bench-boot-key"


def boot_once(tree: Path, stub_url: str, workdir: Path, *, importtime: bool, env: dict[str, str] | None = None) -> dict[str, Any]:
    import httpx

    for sub in ("cwd", "data"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    server = ServerProcess(stub_url=stub_url, data_dir=workdir / "data", cwd=workdir / "cwd", log_path=workdir / "server.log")
    server.env.update(AUTH_MODE="api_key", API_KEY=API_KEY, PYTHONPATH=f"{tree / 'src'}:{tree}", **(env or {}))
    if importtime:
        server.env["PYTHONPROFILEIMPORTTIME"] = "1"
    started = server.spawn()
    try:
        boot = server.wait_boot(started, timeout=120)
        assert server.proc is not None
        cpu_at_ready = process_cpu_s(server.proc.pid)
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as client:
            first_ms, second_ms = first_two_executes(client)
        return {**boot, "cpu_at_ready_s": cpu_at_ready, "first_execute_ms": first_ms, "second_execute_ms": second_ms}
    finally:
        server.stop()


def first_two_executes(client: Any) -> tuple[float, float]:
    """The first two live seed executes right after ready, in ms (the first must succeed)."""
    times: list[float] = []
    for _ in range(2):
        t0 = time.perf_counter()
        answer = client.post("/v1/execute", json=seed_request())
        times.append((time.perf_counter() - t0) * 1000)
        if not times[1:] and answer.status_code != 200:
            raise RuntimeError(f"first execute answered {answer.status_code}: {answer.text[:300]}")
    return times[0], times[1]


def official_once(stub_url: str, workdir: Path, *, importtime: bool) -> dict[str, Any]:
    """The official server, ready at its first 200 on ``/health`` (polled every 20 ms)."""
    import httpx
    from tests.support.official_server import OfficialServer, install_official

    for sub in ("cwd",):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    server = OfficialServer(install_official(), workdir, openai_base_url=stub_url, api_key=API_KEY)
    if importtime:
        server.env["PYTHONPROFILEIMPORTTIME"] = "1"
    command = [server.install.python, "-m", "uvicorn", "pipelex_api.main:app", "--host", "127.0.0.1", "--port", str(server.port)]
    import subprocess

    started = time.perf_counter()
    with server.log_path.open("ab") as log:
        server.process = subprocess.Popen(command, cwd=workdir / "cwd", env=server.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as client:
            while True:
                if server.process.poll() is not None:
                    raise RuntimeError(server.log()[-1500:])
                try:
                    if client.get("/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
            ready = time.perf_counter() - started
            cpu_at_ready = process_cpu_s(server.process.pid)
            first_ms, second_ms = first_two_executes(client)
        return {
            "health_s": ready,
            "ready_s": ready,
            "cpu_at_ready_s": cpu_at_ready,
            "first_execute_ms": first_ms,
            "second_execute_ms": second_ms,
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+", help="NAME=TREE (TREE `official`: the official server)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for our servers (repeatable), e.g. WARM_UP=false")
    parser.add_argument("--importtime", action="store_true", help="keep each spawn's -X importtime log")
    parser.add_argument("--keep", default=None, help="directory for logs (default: a temporary one)")
    args = parser.parse_args()
    variants = [(name, Path(tree)) for name, tree in (item.split("=", 1) for item in args.variants)]
    from tests.support.stub_llm import StubLLMProcess

    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    keep = Path(args.keep or tempfile.mkdtemp(prefix="bench-boot-"))
    stub = StubLLMProcess(latency_ms=0, python=sys.executable)
    stub.start()
    try:
        for index, name, tree in interleaved(variants, args.rounds):
            workdir = keep / f"{name}-{index}"
            if str(tree) == "official":
                result = official_once(stub.base_url, workdir, importtime=args.importtime)
            else:
                env = dict(item.split("=", 1) for item in args.env)
                result = boot_once(tree, stub.base_url, workdir, importtime=args.importtime, env=env)
            results[name].append(result)
            print(
                f"round {index} {name:8s} ready {result['ready_s']:.3f}s health {result['health_s']:.3f}s "
                f"cpu@ready {result['cpu_at_ready_s']:.2f}s first {result['first_execute_ms']:.0f}ms "
                f"second {result['second_execute_ms']:.0f}ms",
                flush=True,
            )
    finally:
        stub.stop()
    print(f"\nlogs: {keep}\n{'':10s}{'median  [min .. max]':>40s}")
    for key in ("health_s", "ready_s", "cpu_at_ready_s", "first_execute_ms", "second_execute_ms"):
        for name, _ in variants:
            print(f"{key:18s} {name:8s} {spread([r[key] for r in results[name]])}")
    (keep / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
