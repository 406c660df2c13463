"""The server's Prometheus metric families and the one-line hooks the rest of the code calls to move them.

Label values are bounded so cardinality stays fixed: HTTP routes are their templates (never raw paths), states and
outcomes are closed sets, and caller-chosen values (pipe codes, model names) are kept for the first
``MAX_LABEL_VALUES`` distinct ones a process sees, then counted as ``_other``. No run or caller id is ever a label.

With ``--workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start: every process writes its
figures there and a scrape of any worker sums them all (``exposition``). Hooks never raise and cost nothing when
metrics are off (METRICS_ENABLED=false).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

logger = logging.getLogger(__name__)

PREFIX = "pipelex_server"
OTHER = "_other"
MAX_LABEL_VALUES = 200
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
FETCH_OUTCOMES = frozenset(
    {"ok", "url_refused", "too_many_redirects", "timeout", "unreachable", "http_status", "too_large", "content_type", "budget"}
)

_enabled = True


def configure(*, enabled: bool) -> None:
    """Turn the hooks on or off for this process (METRICS_ENABLED)."""
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class _BoundedValues:
    """The first ``limit`` distinct values of a caller-chosen label; later ones become ``_other``."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        value = (value or "")[:200] or "unknown"
        if value in self.seen:
            return value
        with self.lock:
            if len(self.seen) >= self.limit:
                return OTHER
            self.seen.add(value)
        return value


@dataclass(frozen=True)
class Families:
    http_requests: Counter
    http_duration: Histogram
    runs_started: Counter
    runs_finished: Counter
    run_duration: Histogram
    runs_executing: Gauge
    pipe_duration: Histogram
    llm_calls: Counter
    llm_tokens: Counter
    llm_cost: Counter
    fetches: Counter
    callback_attempts: Counter
    activity_attempts: Counter
    activity_retries: Counter
    registry: CollectorRegistry
    directory: str | None  # PROMETHEUS_MULTIPROC_DIR as it was when the families were built (the process model)


@cache
def families() -> Families:
    """Built on first use (after the CLI chose the process model), once per process."""
    registry = CollectorRegistry(auto_describe=True)
    directory = multiprocess_dir()
    if directory is None:
        ProcessCollector(registry=registry)

    def name(suffix: str) -> str:
        return f"{PREFIX}_{suffix}"

    return Families(
        http_requests=Counter(name("http_requests"), "HTTP requests answered", ["method", "route", "status"], registry=registry),
        http_duration=Histogram(
            name("http_request_duration_seconds"), "HTTP request latency", ["method", "route"], buckets=HTTP_BUCKETS, registry=registry
        ),
        runs_started=Counter(name("runs_started"), "Runs created (queued or started at once)", ["pipe_code"], registry=registry),
        runs_finished=Counter(name("runs_finished"), "Runs ended, by final state", ["state", "pipe_code"], registry=registry),
        run_duration=Histogram(
            name("run_duration_seconds"), "Run duration from start (or creation) to end", ["state"], buckets=RUN_BUCKETS, registry=registry
        ),
        runs_executing=Gauge(name("runs_executing"), "Runs this process is executing now", registry=registry, multiprocess_mode="livesum"),
        pipe_duration=Histogram(
            name("pipe_duration_seconds"),
            "Duration of each pipe run, by pipe type",
            ["pipe_type", "outcome"],
            buckets=RUN_BUCKETS,
            registry=registry,
        ),
        llm_calls=Counter(name("llm_calls"), "Inference calls", ["provider", "model"], registry=registry),
        llm_tokens=Counter(name("llm_tokens"), "Inference tokens", ["provider", "model", "direction"], registry=registry),
        llm_cost=Counter(
            name("llm_cost_usd"), "Inference cost in US dollars (models with a rate table)", ["provider", "model"], registry=registry
        ),
        fetches=Counter(name("url_fetches"), "URL input fetches, by outcome", ["outcome"], registry=registry),
        callback_attempts=Counter(name("callback_attempts"), "Completion callback attempts, by outcome", ["outcome"], registry=registry),
        activity_attempts=Counter(
            name("temporal_activity_attempts"), "Temporal activity attempts started", ["activity"], registry=registry
        ),
        activity_retries=Counter(
            name("temporal_activity_retries"), "Temporal activity attempts after the first", ["activity"], registry=registry
        ),
        registry=registry,
        directory=directory,
    )


_pipe_codes = _BoundedValues()
_models = _BoundedValues()
_providers = _BoundedValues(limit=50)
_pipe_types = _BoundedValues(limit=50)


_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _child(family: Any, *values: str) -> Any:
    """``family.labels(*values)``, remembered: prometheus_client checks and locks on every ``labels`` call, and the
    label values are bounded, so the children a process uses are few."""
    key = (family, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = family.labels(*values)
    return child


def _guarded(what: str, action: Any, *args: Any) -> None:
    if not _enabled:
        return
    try:
        action(*args)
    except Exception:  # a metric never breaks a request or a run
        logger.exception("metrics: %s failed", what)


# ---------------------------------------------------------------- hooks


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    def act() -> None:
        found = families()
        _child(found.http_requests, method, route, str(status)).inc()
        _child(found.http_duration, method, route).observe(seconds)

    _guarded("http_request", act)


def run_started(pipe_code: str | None) -> None:
    _guarded("run_started", lambda: _child(families().runs_started, _pipe_codes(pipe_code)).inc())


def run_finished(row: dict[str, Any], state: str, finished_at: Any = None) -> None:
    """A run ended (``row``: the run as it was before its end; ``finished_at``: when it ended)."""

    def act() -> None:
        found = families()
        _child(found.runs_finished, state, _pipe_codes(row.get("pipe_code"))).inc()
        begun = row.get("started_at") or row.get("created_at")
        if begun is not None and finished_at is not None:
            _child(found.run_duration, state).observe(max((finished_at - begun).total_seconds(), 0.0))

    _guarded("run_finished", act)


def run_executing(delta: int) -> None:
    _guarded("run_executing", lambda: families().runs_executing.inc(delta))


def llm_call(*, provider: str | None, model: str | None, tokens: dict[str, int], cost: float | None) -> None:
    def act() -> None:
        found = families()
        labels = (_providers(provider), _models(model))
        _child(found.llm_calls, *labels).inc()
        for direction in ("input", "output"):
            if tokens.get(direction):
                _child(found.llm_tokens, *labels, direction).inc(tokens[direction])
        if cost:
            _child(found.llm_cost, *labels).inc(cost)

    _guarded("llm_call", act)


def url_fetch(outcome: str) -> None:
    _guarded("url_fetch", lambda: families().fetches.labels(outcome if outcome in FETCH_OUTCOMES else OTHER).inc())


def callback_attempt(*, delivered: bool, status: int | None) -> None:
    outcome = "delivered" if delivered else ("no_answer" if status is None else f"http_{status // 100}xx")
    _guarded("callback_attempt", lambda: families().callback_attempts.labels(outcome).inc())


def activity_attempt(activity: str, attempt: int) -> None:
    def act() -> None:
        found = families()
        found.activity_attempts.labels(activity).inc()
        if attempt > 1:
            found.activity_retries.labels(activity).inc()

    _guarded("activity_attempt", act)


class PipeClock:
    """Times each pipe run of one run, keyed by the runtime's job object (start and end see the same one)."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}

    def start(self, job: object) -> None:
        if _enabled:
            self._started[id(job)] = time.perf_counter()

    def stop(self, job: object, pipe_type: str, outcome: str) -> None:
        began = self._started.pop(id(job), None)
        if began is not None:
            seconds = time.perf_counter() - began
            _guarded("pipe", lambda: _child(families().pipe_duration, _pipe_types(pipe_type), outcome).observe(seconds))


# ---------------------------------------------------------------- exposition


class _Snapshot:
    """Extra gauge families computed at scrape time (the fleet's queued and running runs, from the run store)."""

    def __init__(self, gauges: Iterable[tuple[str, str, float]]) -> None:
        self.gauges = list(gauges)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for suffix, documentation, value in self.gauges:
            yield GaugeMetricFamily(f"{PREFIX}_{suffix}", documentation, value=value)


def exposition(gauges: Iterable[tuple[str, str, float]] = ()) -> bytes:
    """The text exposition of this process (or, in multiprocess mode, of every worker), plus ``gauges``."""
    found = families()
    if found.directory is None:
        extra = CollectorRegistry(auto_describe=False)
        extra.register(_Snapshot(gauges))
        return generate_latest(found.registry) + generate_latest(extra)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=found.directory)
    registry.register(_Snapshot(gauges))
    return generate_latest(registry)


def prepare_multiprocess(workers: int) -> str | None:
    """Before ``--workers N`` processes start: a fresh PROMETHEUS_MULTIPROC_DIR they all write to, removed when this
    process exits. An operator's own directory (any number of workers) is emptied of an earlier run's files instead.
    None when metrics stay in this one process."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    directory = multiprocess_dir()
    if directory is None and workers <= 1:
        return None
    if directory is None:
        directory = tempfile.mkdtemp(prefix="pipelex-server-metrics-")
        os.environ[MULTIPROC_ENV] = directory
        atexit.register(shutil.rmtree, directory, True)
    else:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink(missing_ok=True)
    return directory


def serve_http(host: str, port: int) -> Callable[[], None]:
    """`pipelex-server worker`: this process's metrics on http://host:port/metrics (a daemon thread). Returns what stops
    it; ConfigurationError when the address cannot be bound."""
    from prometheus_client import start_http_server

    from pipelex_server.errors import ConfigurationError

    try:
        server, _thread = start_http_server(port, addr=host, registry=families().registry)
    except OSError as exc:
        raise ConfigurationError(f"METRICS_PORT: cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    logger.info("metrics on http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
