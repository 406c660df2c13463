"""Core server benchmark: prints numbers, asserts nothing.

Measures, against the deterministic stub LLM (``tests/support/stub_llm.py``) and a real
``pipelex-server serve`` subprocess:

  (a) sequential latency of ``POST /api/v1/pipeline/execute`` (0 ms stub) over one keep-alive connection,
      and the same run through the engine adapter in a separate child process -> HTTP overhead;
  (b) concurrency: K requests with C in flight against a slow stub (500 ms) -> wall time;
  (c) ``POST /api/v1/validate`` median latency, cached (same body) and uncached (distinct bodies);
  (d) boot time: spawn -> first 200 on ``/health`` and on ``/health/ready``;
  (e) peak RSS of the server's process tree (server + children), polled every 50 ms.

Usage::

    .venv/bin/python bench/bench_core.py            # full run
    .venv/bin/python bench/bench_core.py --quick    # smoke run
    .venv/bin/python bench/bench_core.py --profile  # also cProfile the in-process child (top functions)
    .venv/bin/python bench/bench_core.py --workers 2  # serve --workers 2 (sequential (a) then rides one worker)

Results are printed as a table and written to ``bench/results/core-<timestamp>.json``.
Everything binds and talks to 127.0.0.1 only; every subprocess and temp dir is cleaned up on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, seed_request  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
EXECUTE_PATH = "/api/v1/pipeline/execute"
VALIDATE_PATH = "/api/v1/validate"

TARGETS = {
    "http_overhead_ms": 3.0,
    "concurrency_wall_s": 2.8,
    "boot_health_s": 3.0,
    "boot_ready_s": 6.0,
}

# Provider credentials and server knobs of the developer's shell must not leak into the measured processes.
_SCRUB_PREFIXES = ("OPENAI_", "ANTHROPIC_", "GOOGLE_", "GEMINI_", "MISTRAL_", "AZURE_", "AWS_", "BEDROCK_", "OLLAMA_", "PIPELEX", "VERTEX")
_SCRUB_NAMES = {
    "AUTH_MODE",
    "API_KEY",
    "JWT_SECRET_KEY",
    "DATABASE_URL",
    "DATA_DIR",
    "HOST",
    "PORT",
    "EXECUTION_MODE",
    "LIBRARY_DIRS",
    "XAI_API_KEY",
    "GROQ_API_KEY",
    "FAL_API_KEY",
    "BLACKBOXAI_API_KEY",
    "HF_TOKEN",
    "HUGGINGFACE_API_KEY",
    "PORTKEY_API_KEY",
    "MAX_CONCURRENT_RUNS",
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_NAMES and not k.startswith(_SCRUB_PREFIXES)}
    env["DO_NOT_TRACK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank-interpolated percentile (same as numpy's default 'linear')."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in samples_s]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "min_ms": round(min(ms), 3) if ms else float("nan"),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        # A tell-tale of Nagle + delayed ACK on loopback: samples clustered around 40 ms.
        "n_between_38_and_45_ms": sum(1 for v in ms if 38.0 <= v <= 45.0),
        "samples_ms": [round(v, 3) for v in ms],
    }


def write_results(kind: str, results: dict[str, Any], table: str | None = None) -> Path:
    """``bench/results/<kind>-<timestamp>.json`` (every sample), and ``.md`` with ``table`` when given; prints where."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    if table is not None:
        out.with_suffix(".md").write_text(table + "\n")
    print(f"\nresults written to {out.relative_to(REPO_ROOT)}" + (" (and .md)" if table is not None else ""))
    return out


async def burst(
    url: str, body: dict[str, Any], *, headers: dict[str, str], total: int, in_flight: int, check: Callable[[Any], bool]
) -> tuple[float, int]:
    """``total`` POSTs of ``body`` to ``url``, ``in_flight`` at a time over as many keep-alive connections (the burst
    of compare_official, burst_cpu and floors): the wall seconds from the first send, and how many answers ``check``
    accepted."""
    import httpx

    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    semaphore = asyncio.Semaphore(in_flight)
    ok = 0
    async with httpx.AsyncClient(headers=headers, timeout=300, limits=limits) as client:

        async def one() -> None:
            nonlocal ok
            async with semaphore:
                answer = await client.post(url, json=body)  # awaited first: `ok +=` reads ok after it
                ok += check(answer)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return time.perf_counter() - started, ok


def process_cpu_s(pid: int) -> float:
    """user + sys seconds of one process (its own, not its children's), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def stub_and_workdir(prefix: str, *, latency_ms: int = 0) -> Iterator[tuple[Any, Path]]:
    """A started stub LLM (a subprocess) and a temporary directory, both gone on exit, also on error or interruption."""
    from tests.support.stub_llm import StubLLMProcess

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    stub = StubLLMProcess(latency_ms=latency_ms, python=sys.executable)
    try:
        stub.start()
        yield stub, workdir
    finally:
        stub.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version_of(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pipelex": version_of("pipelex"),
        "pipelex_server": version_of("pipelex-server"),
        "platform": platform.platform(),
    }


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def fmt_load(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"

    return {"commit": git("rev-parse", "--short", "HEAD"), "src_dirty": bool(git("status", "--porcelain", "src"))}


class ForeignCpu:
    """CPU used on this machine by processes outside this script's tree (other jobs), in cores, over an interval."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._busy0 = self._busy()
        self._own0 = self._own()
        import psutil

        self._steal0 = getattr(psutil.cpu_times(), "steal", 0.0)

    @staticmethod
    def _busy() -> float:
        import psutil

        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    @staticmethod
    def _own() -> float:
        import psutil

        me = psutil.Process()
        t = me.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system  # waited-for children included
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                ct = child.cpu_times()
                total += ct.user + ct.system
        return total

    def cores(self) -> float:
        wall = time.perf_counter() - self._t0
        foreign = (self._busy() - self._busy0) - (self._own() - self._own0)
        return round(max(0.0, foreign) / wall, 2) if wall > 0 else float("nan")

    def steal(self) -> float:
        """CPU the hypervisor took from this VM over the interval, in cores."""
        import psutil

        wall = time.perf_counter() - self._t0
        return round((getattr(psutil.cpu_times(), "steal", 0.0) - self._steal0) / wall, 2) if wall > 0 else float("nan")


def uncached_validate_body(n: int) -> dict[str, Any]:
    return {"mthds_contents": [f"{SEED_BUNDLE}# bench {n} {time.time_ns()}\n"]}


# ---------------------------------------------------------------------------------------------------------
# RSS monitor
# ---------------------------------------------------------------------------------------------------------


class RssMonitor(threading.Thread):
    """Polls the RSS of a process and all its descendants every ``interval`` seconds; keeps the peak sum."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(name="rss-monitor", daemon=True)
        self.interval = interval
        self.pid: int | None = None
        self.peak_bytes = 0
        self.samples = 0
        self._halt = threading.Event()

    def watch(self, pid: int) -> None:
        self.pid = pid

    def sample_now(self) -> None:
        """One more sample at once (the peak up to this moment includes it)."""
        import psutil

        pid = self.pid
        if pid is None:
            return
        total = 0
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        if total:
            self.samples += 1
            self.peak_bytes = max(self.peak_bytes, total)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample_now()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=2)


# ---------------------------------------------------------------------------------------------------------
# server subprocess
# ---------------------------------------------------------------------------------------------------------


class ServerProcess:
    def __init__(
        self, *, stub_url: str, data_dir: Path, cwd: Path, log_path: Path, max_concurrent_runs: int = 64, workers: int = 1
    ) -> None:
        self.workers = workers
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(
            DATA_DIR=str(data_dir),
            OPENAI_BASE_URL=stub_url,
            MAX_CONCURRENT_RUNS=str(max_concurrent_runs),
        )
        self.cwd = cwd
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    def spawn(self) -> float:
        self._log_file = self.log_path.open("wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelex_server.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--workers",
                str(self.workers),
            ],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return started

    def wait_boot(self, started: float, timeout: float = 60.0) -> dict[str, float]:
        """Poll /health then /health/ready every ~20 ms; seconds from spawn to the first 200 of each."""
        import httpx

        out: dict[str, float] = {}
        deadline = started + timeout
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            for key, path in (("health_s", "/health"), ("ready_s", "/health/ready")):
                while True:
                    assert self.proc is not None
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"server exited with {self.proc.returncode} during boot:\n{self.log_tail()}")
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"server not {path}-healthy within {timeout}s:\n{self.log_tail()}")
                    try:
                        resp = client.get(path)
                        if resp.status_code == 200:
                            out[key] = time.perf_counter() - started
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.02)
        return out

    def wait_quiet(self, started: float, *, cpu_pct: float = 10.0, window: float = 0.5, timeout: float = 30.0) -> float:
        """Wait until the server tree uses < ``cpu_pct`` % of one core over ``window`` s; seconds from spawn.

        With ``--workers N`` the first 200 on /health/ready may come from one worker while another still imports;
        the boot imports are CPU-heavy, so a quiet tree means every worker finished booting."""
        import psutil

        assert self.proc is not None
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            try:
                root = psutil.Process(self.proc.pid)
                procs = [root, *root.children(recursive=True)]
                before = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
                time.sleep(window)
                after = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
            except psutil.Error:
                time.sleep(window)
                continue
            if (after - before) / window * 100.0 < cpu_pct:
                return time.perf_counter() - started
        return float("nan")

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=5)
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


# ---------------------------------------------------------------------------------------------------------
# measurements over HTTP
# ---------------------------------------------------------------------------------------------------------


def is_completed(resp: Any) -> bool:
    if resp.status_code != 200:
        return False
    try:
        return resp.json().get("pipeline_state") == "COMPLETED"
    except ValueError:
        return False


def http_sequential(base_url: str, *, n: int, warmup: int) -> dict[str, Any]:
    import httpx

    body = seed_request()
    samples: list[float] = []
    failures: dict[str, int] = {}
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        for _ in range(warmup):
            client.post(EXECUTE_PATH, json=body)
        for _ in range(n):
            t0 = time.perf_counter()
            resp = client.post(EXECUTE_PATH, json=body)
            elapsed = time.perf_counter() - t0
            if is_completed(resp):
                samples.append(elapsed)
            else:
                key = f"{resp.status_code}"
                failures[key] = failures.get(key, 0) + 1
    return {**summarize_ms(samples), "failures": failures}


def http_validate(base_url: str, *, n: int, warmup: int) -> dict[str, Any]:
    import httpx

    cached_body = {"mthds_contents": [SEED_BUNDLE]}
    cached: list[float] = []
    uncached: list[float] = []
    failures: dict[str, int] = {}
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        for i in range(warmup):
            client.post(VALIDATE_PATH, json=cached_body)
            client.post(VALIDATE_PATH, json=uncached_validate_body(-1 - i))
        for i in range(n):
            for samples, body in ((cached, cached_body), (uncached, uncached_validate_body(i))):
                t0 = time.perf_counter()
                resp = client.post(VALIDATE_PATH, json=body)
                elapsed = time.perf_counter() - t0
                ok = resp.status_code == 200 and resp.json().get("success") is True
                if ok:
                    samples.append(elapsed)
                else:
                    key = f"{resp.status_code}"
                    failures[key] = failures.get(key, 0) + 1
    return {"cached": summarize_ms(cached), "uncached": summarize_ms(uncached), "failures": failures}


async def http_concurrent(base_url: str, *, total: int, in_flight: int) -> dict[str, Any]:
    import httpx

    body = seed_request()
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    statuses: dict[str, int] = {}
    completed = 0
    latencies: list[float] = []
    semaphore = asyncio.Semaphore(in_flight)

    async with httpx.AsyncClient(base_url=base_url, timeout=120.0, limits=limits) as client:

        async def one() -> None:
            nonlocal completed
            async with semaphore:
                t0 = time.perf_counter()
                try:
                    resp = await client.post(EXECUTE_PATH, json=body)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                    return
                latencies.append(time.perf_counter() - t0)
                statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1
                if is_completed(resp):
                    completed += 1

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        wall = time.perf_counter() - started
    return {
        "total": total,
        "in_flight": in_flight,
        "wall_s": round(wall, 3),
        "completed_200": completed,
        "statuses": statuses,
        "latency": summarize_ms(latencies),
    }


# ---------------------------------------------------------------------------------------------------------
# in-process child
# ---------------------------------------------------------------------------------------------------------


async def _inprocess(stub_url: str, data_dir: Path, n: int, warmup: int, profile_path: str | None) -> dict[str, Any]:
    from pipelex_server.engine.runtime import Engine
    from pipelex_server.fetch import Fetcher
    from pipelex_server.settings import Settings
    from pipelex_server.storage.local import LocalObjectStore

    store = LocalObjectStore(data_dir / "storage")
    fetcher = Fetcher(allow_private=False, max_bytes=1 << 20, timeout_seconds=10)
    engine = Engine(Settings(data_dir=data_dir, openai_base_url=stub_url), store=store, fetcher=fetcher)
    t0 = time.perf_counter()
    await engine.start()
    boot_s = time.perf_counter() - t0
    if engine.boot_error is not None:
        raise RuntimeError(f"engine failed to boot: {engine.boot_error!r}")

    async def once() -> None:
        await engine.execute(
            pipe_code="summarize",
            mthds_contents=[SEED_BUNDLE],
            inputs={"text": SEED_TEXT},
            output_name=None,
            output_multiplicity=None,
            dynamic_output_concept_ref=None,
            dry_run=False,
            scope="bench",
            storage_scope="bench/runs/bench",
            request_id=None,
        )

    try:
        for _ in range(warmup):
            await once()
        samples: list[float] = []
        for _ in range(n):
            t = time.perf_counter()
            await once()
            samples.append(time.perf_counter() - t)
        if profile_path:  # a separate loop: the profiler's overhead must not touch the measured samples
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(n):
                await once()
            profiler.disable()
            profiler.dump_stats(profile_path)
    finally:
        engine.stop()
    return {"boot_s": round(boot_s, 3), **summarize_ms(samples)}


def inprocess_child_main(args: argparse.Namespace) -> None:
    result = asyncio.run(_inprocess(args.stub_url, Path(args.data_dir), args.requests, args.warmup, args.profile_out))
    Path(args.result_out).write_text(json.dumps(result))


def run_inprocess_child(*, stub_url: str, n: int, warmup: int, workdir: Path, profile_out: Path | None) -> dict[str, Any]:
    cwd = workdir / "inproc-cwd"
    data_dir = workdir / "inproc-data"
    cwd.mkdir()
    data_dir.mkdir()
    result_out = workdir / "inproc-result.json"
    log_path = workdir / "inproc.log"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--inprocess-child",
        "--stub-url",
        stub_url,
        "--data-dir",
        str(data_dir),
        "--requests",
        str(n),
        "--warmup",
        str(warmup),
        "--result-out",
        str(result_out),
    ]
    if profile_out is not None:
        cmd += ["--profile-out", str(profile_out)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=clean_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)
            raise RuntimeError("in-process child timed out") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=5)
    if rc != 0 or not result_out.exists():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"in-process child failed (rc={rc}):\n{tail}")
    return json.loads(result_out.read_text())


def profile_summary(path: Path, top: int = 25) -> str:
    import io
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    buf.write("\n---- by own time ----\n")
    stats.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------


def verdict(value: float, target: float) -> str:
    return "MET" if value <= target else "MISSED"


def print_table(results: dict[str, Any]) -> None:
    m = results["machine"]
    print()
    print(f"machine: {m['cpu']} | {m['cores']} cores | Python {m['python']} | pipelex {m['pipelex']} | {m['platform']}")
    p = results["params"]
    print(
        f"params: requests={p['requests']} warmup={p['warmup']} concurrency={p['concurrent_total']}/{p['concurrency']} "
        f"in flight, stub latency={p['latency_ms']} ms, validate n={p['validate_requests']}, workers={p['workers']}"
    )
    print(
        f"load average (1/5/15 min): before {fmt_load(results['loadavg_before'])}, after {fmt_load(results['loadavg_after'])}; "
        f"CPU used by other processes during the run: {results['foreign_cpu_cores']:.2f} cores, "
        f"stolen by the hypervisor: {results['steal_cores']:.2f} cores"
    )
    rows: list[tuple[str, str, str, str]] = []

    seq = results["sequential_http"]
    inp = results["sequential_inprocess"]
    overhead = results["http_overhead_ms"]
    rows.append(("(a) execute, HTTP, median / p90 / p99", f"{seq['median_ms']:.2f} / {seq['p90_ms']:.2f} / {seq['p99_ms']:.2f} ms", "", ""))
    rows.append(
        ("(a) execute, in-process, median / p90 / p99", f"{inp['median_ms']:.2f} / {inp['p90_ms']:.2f} / {inp['p99_ms']:.2f} ms", "", "")
    )
    rows.append(
        (
            "(a) HTTP overhead (median HTTP - median in-proc)",
            f"{overhead:.2f} ms",
            "<= 3 ms",
            verdict(overhead, TARGETS["http_overhead_ms"]),
        )
    )
    conc = results["concurrency"]
    rows.append(
        (
            f"(b) {conc['total']} req / {conc['in_flight']} in flight / {p['latency_ms']} ms stub, wall",
            f"{conc['wall_s']:.2f} s ({conc['completed_200']}/{conc['total']} 200 COMPLETED)",
            "<= 2.8 s",
            verdict(conc["wall_s"], TARGETS["concurrency_wall_s"]) if conc["completed_200"] == conc["total"] else "MISSED (errors)",
        )
    )
    val = results["validate"]
    rows.append(
        ("(c) validate median, cached / uncached", f"{val['cached']['median_ms']:.2f} / {val['uncached']['median_ms']:.2f} ms", "", "")
    )
    boot = results["boot"]
    rows.append(
        ("(d) boot: spawn -> /health 200", f"{boot['health_s']:.2f} s", "<= 3 s", verdict(boot["health_s"], TARGETS["boot_health_s"]))
    )
    rows.append(
        ("(d) boot: spawn -> /health/ready 200", f"{boot['ready_s']:.2f} s", "<= 6 s", verdict(boot["ready_s"], TARGETS["boot_ready_s"]))
    )
    if not (boot.get("quiet_s") != boot.get("quiet_s")):  # not NaN
        rows.append(("(d) boot: spawn -> server tree CPU-quiet (all workers up)", f"{boot['quiet_s']:.2f} s", "", ""))
    rows.append(("(e) peak RSS, server process tree", f"{results['peak_rss_mib']:.1f} MiB", "", ""))

    widths = [max(len(r[i]) for r in [*rows, ("metric", "value", "target", "verdict")]) for i in range(4)]
    header = ("metric", "value", "target", "verdict")
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    anomalies = results.get("anomalies") or []
    if anomalies:
        print("\nanomalies:")
        for a in anomalies:
            print(f"  - {a}")


def nagle_cluster(samples_ms: list[float]) -> bool:
    """True when the samples pile up at 38-45 ms more than in the 7 ms on either side (a delayed-ACK signature)."""
    cluster = sum(1 for v in samples_ms if 38.0 <= v <= 45.0)
    neighbours = sum(1 for v in samples_ms if 31.0 <= v < 38.0 or 45.0 < v <= 52.0)
    return cluster > max(3, len(samples_ms) // 20) and cluster > neighbours


def find_anomalies(results: dict[str, Any]) -> list[str]:
    notes: list[str] = []
    for name in ("sequential_http", "sequential_inprocess"):
        stats = results[name]
        if stats.get("failures"):
            notes.append(f"{name}: non-COMPLETED answers {stats['failures']}")
        if nagle_cluster(stats["samples_ms"]):
            notes.append(f"{name}: {stats['n_between_38_and_45_ms']} samples cluster in 38-45 ms (Nagle/delayed-ACK?)")
    conc = results["concurrency"]
    if conc["completed_200"] != conc["total"]:
        notes.append(f"concurrency: only {conc['completed_200']}/{conc['total']} 200 COMPLETED; statuses {conc['statuses']}")
    if results["validate"].get("failures"):
        notes.append(f"validate: failures {results['validate']['failures']}")
    return notes


# ---------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the core pipelex-server (prints numbers, asserts nothing)")
    parser.add_argument("--requests", type=int, default=None, help="sequential requests for (a) (default 300; quick 40)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests before (a) (default 20; quick 5)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight for (b) (default 32)")
    parser.add_argument("--concurrent-total", type=int, default=None, help="total requests for (b) (default 4 x concurrency)")
    parser.add_argument("--latency-ms", type=int, default=500, help="stub latency for (b) (default 500)")
    parser.add_argument("--validate-requests", type=int, default=None, help="requests per validate variant (default 100; quick 10)")
    parser.add_argument("--workers", type=int, default=1, help="server processes: pipelex-server serve --workers N (default 1)")
    parser.add_argument("--quick", action="store_true", help="smaller N for a smoke run")
    parser.add_argument("--profile", action="store_true", help="after the measured loop, cProfile N more in-process runs; print the top")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/core-<timestamp>.json")
    # internal: the in-process child
    parser.add_argument("--inprocess-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stub-url", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result-out", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 40 if args.quick else 300
    if args.warmup is None:
        args.warmup = 5 if args.quick else 20
    if args.concurrent_total is None:
        args.concurrent_total = 4 * args.concurrency
    if args.validate_requests is None:
        args.validate_requests = 10 if args.quick else 100
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.inprocess_child:
        inprocess_child_main(args)
        return 0

    from tests.support.stub_llm import StubLLMProcess

    # SIGTERM (and SIGINT, even when inherited as ignored) unwind through the finally below: no orphans.
    def _interrupted(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)

    results: dict[str, Any] = {
        "machine": machine_info(),
        "git": git_state(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {
            "requests": args.requests,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "concurrent_total": args.concurrent_total,
            "latency_ms": args.latency_ms,
            "validate_requests": args.validate_requests,
            "workers": args.workers,
            "quick": args.quick,
        },
        "loadavg_before": loadavg(),
        "targets": TARGETS,
    }
    foreign = ForeignCpu()
    m = results["machine"]
    print(f"machine: {m['cpu']} | {m['cores']} cores | Python {m['python']} | pipelex {m['pipelex']}", flush=True)
    print(f"workers: {args.workers} | load average before: {fmt_load(results['loadavg_before'])}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="pipelex-bench-core-"))
    stub = StubLLMProcess(latency_ms=0, python=sys.executable)
    monitor = RssMonitor(interval=0.05)
    server: ServerProcess | None = None
    try:
        stub.start()
        print(f"stub LLM: {stub.base_url}", flush=True)
        monitor.start()

        server_cwd = workdir / "server-cwd"
        server_data = workdir / "server-data"
        server_cwd.mkdir()
        server_data.mkdir()
        server = ServerProcess(
            stub_url=stub.base_url, data_dir=server_data, cwd=server_cwd, log_path=workdir / "server.log", workers=args.workers
        )

        # (d) boot
        started = server.spawn()
        assert server.proc is not None
        monitor.watch(server.proc.pid)
        boot = server.wait_boot(started)
        boot["quiet_s"] = server.wait_quiet(started)
        results["boot"] = {k: round(v, 3) for k, v in boot.items()}
        print(
            f"(d) boot: /health {boot['health_s']:.2f} s, /health/ready {boot['ready_s']:.2f} s, "
            f"server tree quiet (all workers booted) {boot['quiet_s']:.2f} s",
            flush=True,
        )

        # (a) sequential over HTTP, 0 ms stub
        stub.configure(latency_ms=0)
        stub.reset()
        seq = http_sequential(server.base_url, n=args.requests, warmup=args.warmup)
        results["sequential_http"] = seq
        print(f"(a) HTTP sequential: median {seq['median_ms']:.2f} ms, p90 {seq['p90_ms']:.2f}, p99 {seq['p99_ms']:.2f}", flush=True)
        results["stub_calls_after_sequential"] = stub.stats().get("total_calls")

        # (c) validate, cached and uncached
        val = http_validate(server.base_url, n=args.validate_requests, warmup=min(5, args.validate_requests))
        results["validate"] = val
        print(
            f"(c) validate: cached median {val['cached']['median_ms']:.2f} ms, uncached median {val['uncached']['median_ms']:.2f} ms",
            flush=True,
        )

        # (b) concurrency against a slow stub
        stub.configure(latency_ms=args.latency_ms)
        conc = asyncio.run(http_concurrent(server.base_url, total=args.concurrent_total, in_flight=args.concurrency))
        results["concurrency"] = conc
        stub.configure(latency_ms=0)
        print(
            f"(b) {conc['total']} requests / {conc['in_flight']} in flight / {args.latency_ms} ms stub: "
            f"{conc['wall_s']:.2f} s wall, {conc['completed_200']}/{conc['total']} 200 COMPLETED",
            flush=True,
        )

        # (e) peak RSS over the server's whole life (boot + all phases above)
        server.stop()
        monitor.stop()
        results["peak_rss_mib"] = round(monitor.peak_bytes / (1024 * 1024), 1)
        results["rss_samples"] = monitor.samples
        print(f"(e) peak RSS of the server tree: {results['peak_rss_mib']:.1f} MiB ({monitor.samples} samples)", flush=True)

        # (a') the same sequential run through the engine adapter, in a child process, after the server is gone
        profile_out = workdir / "inproc.prof" if args.profile else None
        inp = run_inprocess_child(stub_url=stub.base_url, n=args.requests, warmup=args.warmup, workdir=workdir, profile_out=profile_out)
        results["sequential_inprocess"] = inp
        results["http_overhead_ms"] = round(seq["median_ms"] - inp["median_ms"], 3)
        print(
            f"(a) in-process sequential: median {inp['median_ms']:.2f} ms, p99 {inp['p99_ms']:.2f} "
            f"-> HTTP overhead = {results['http_overhead_ms']:.2f} ms",
            flush=True,
        )
        if profile_out is not None and profile_out.exists():
            print("\n==== cProfile of N extra in-process runs (not the measured ones) ====")
            print(profile_summary(profile_out))

        results["loadavg_after"] = loadavg()
        results["foreign_cpu_cores"] = foreign.cores()
        results["steal_cores"] = foreign.steal()
        results["anomalies"] = find_anomalies(results)
        print_table(results)
        if not args.no_json:
            write_results("core", results)
        return 0
    except Exception:
        if server is not None:
            print("---- server log tail ----", file=sys.stderr)
            print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.stop()
        monitor.stop()
        stub.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())


def spread(values: list[float]) -> str:
    """A median and its range, for the A/B scripts' tables."""
    return f"{statistics.median(values):8.3f}  [{min(values):.3f} .. {max(values):.3f}]"


def interleaved(variants: list[tuple[str, Path]], rounds: int) -> Iterator[tuple[int, str, Path]]:
    """(round, name, tree) for A/B rounds: every variant once per round, the order flipped every other round, so that
    no variant always runs on the warmer or the busier machine."""
    for index in range(rounds):
        for name, tree in variants if index % 2 == 0 else list(reversed(variants)):
            yield index, name, tree
