"""One deployment per execution mode, each a real API process (and, in Temporal mode, a real worker process and a
real Temporal dev server), for the conformance suite that must pass identically in both modes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.stub_llm import StubLLM
from tests.support.temporal import TemporalDevServer, WorkerProcess

CALLBACK_SECRET = "conformance-callback-secret"
# the session deployments take the caller from X-User-Id (behind a trusted proxy), so tests can be two callers
CALLER = {"X-User-Id": "conformance"}


@dataclass
class Deployment:
    mode: str
    api: ServerProcess
    env: dict[str, str]
    workdir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.api.url

    def add_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.workdir / f"worker{len(self.workers) + 1}", env=self.env).start()
        self.workers.append(worker)
        return worker

    def restart_api(self) -> None:
        self.api.stop()
        self.api = ServerProcess(self.workdir / f"api-{len(self.workers)}-{self.api.port}", env=self.env).start()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.api.stop()


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
    with TemporalDevServer(tmp_path_factory.mktemp("temporal")) as server:
        yield server


def deployment_env(stub: StubLLM, data_dir: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(data_dir),
        "OPENAI_BASE_URL": stub.base_url,
        "COMPLETION_CALLBACK_SECRET": CALLBACK_SECRET,
        "CALLBACK_ALLOW_PRIVATE_HOSTS": "true",
        "CALLBACK_BACKOFF_SECONDS": "0.2",
        "SHUTDOWN_GRACE_SECONDS": "2",
    }


def start_deployment(
    mode: str,
    stub: StubLLM,
    workdir: Path,
    temporal: TemporalDevServer | None,
    extra_env: dict[str, str] | None = None,
    *,
    forwarded_identity: bool = False,
) -> Deployment:
    """``extra_env`` with DATABASE_URL (PostgreSQL) and the S3 variables gives the several-hosts configuration;
    without it, Temporal mode runs on one host (SQLite and a local directory, SINGLE_HOST=true). With
    ``forwarded_identity`` the caller is the X-User-Id header (TRUST_FORWARDED_IDENTITY_HEADERS=true)."""
    env = deployment_env(stub, workdir / "data")
    if forwarded_identity:
        env["TRUST_FORWARDED_IDENTITY_HEADERS"] = "true"
    if mode == "temporal":
        assert temporal is not None
        env |= {**temporal.env(), "TEMPORAL_HEARTBEAT_TIMEOUT_SECONDS": "4", "TEMPORAL_MAX_ATTEMPTS": "3"}
        if not extra_env:
            env["SINGLE_HOST"] = "true"
    if extra_env:
        del env["DATA_DIR"]  # nothing shared on disk: every process keeps its own data directory
    env |= extra_env or {}
    api = ServerProcess(workdir / "api", env=env)
    deployment = Deployment(mode=mode, api=api.start(), env=env, workdir=workdir)
    if mode == "temporal":
        deployment.add_worker()
    return deployment


@pytest.fixture(scope="session", params=["inprocess", pytest.param("temporal", marks=pytest.mark.temporal)])
def deployment(request: pytest.FixtureRequest, stub: StubLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    temporal = request.getfixturevalue("temporal_server") if request.param == "temporal" else None
    deployed = start_deployment(request.param, stub, tmp_path_factory.mktemp(f"deploy-{request.param}"), temporal, forwarded_identity=True)
    yield deployed
    deployed.stop()


@pytest.fixture
async def api(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=deployment.url, timeout=60, headers=CALLER) as client:
        yield client
