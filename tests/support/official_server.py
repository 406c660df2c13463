"""The official server (`pipelex-api` from the package registry), installed once per machine and booted for the tests.

The conformance suite (tests/conformance/test_official_conformance.py) sends the same requests to it and to ours.

Install (cached under ``~/.cache/pipelex-server-tests/official-<version>/``, reused when present):

- the cheap way first, an *overlay*: ``pip install --no-deps --target DIR pipelex-api==<version>``, run with this
  venv's Python and ``PYTHONPATH=DIR``. It pins the same ``pipelex`` as we do, so the only packages the overlay needs
  beside it are the declared requirements this venv does not satisfy (0.92.2 caps ``fastapi<0.142``; ours is newer):
  each is added to DIR, ``--no-deps`` again, until every requirement of every package in DIR is met. The extras it
  asks of ``pipelex`` (anthropic, bedrock, fal, google, mistral) are the SDKs of backends the stub setup disables.
- a real venv (``python -m venv`` + ``pip install pipelex-api==<version>``) only when the overlay cannot be completed.

Either way ``import pipelex_api.main`` is checked before the install is kept. It is built in a staging directory
and renamed into place, under a lock, so a failed or concurrent install never leaves a half-written cache.

Boot: uvicorn on 127.0.0.1 and a free port, ``AUTH_MODE=api_key``, ``DO_NOT_TRACK=1``, a ``PIPELEX_HOME`` and a
``HOME`` of its own (prepared like ours: only the ``openai`` backend, at the stub; no method fetching; otherwise its
defaults),
a cwd with no ``.env`` or ``.pipelex``. Ready when ``GET /health`` answers (uvicorn serves only after the lifespan
has booted the runtime).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipelex_server.engine.home import BACKEND_CREDENTIALS, dump_toml, plan_inference, prepare_home
from tests.support.server import STARTED, free_port

OFFICIAL_VERSION = "0.92.2"
REQUIRE_ENV = "PIPELEX_SERVER_REQUIRE_OFFICIAL"
CACHE_ROOT = Path(os.environ.get("PIPELEX_SERVER_TESTS_CACHE") or Path.home() / ".cache" / "pipelex-server-tests")
MARKER = "conformance-install.json"
PIP_TIMEOUT = 900
MAX_OVERLAY_ROUNDS = 4

# The one thing the official server is told beyond the stub's wiring: never fetch a method package from the network.
# Everything else (tracing, storage, logs) stays at its defaults, as its operator would run it; what it writes lands in
# its own cwd and home, under the test's temporary directory.
RUNTIME_OVERRIDES: dict[str, Any] = {"interpreter": {"methods": {"fetch_on_miss": False}}}


class OfficialUnavailable(RuntimeError):
    """The official server could not be installed or booted here; the message says why."""


@dataclass(frozen=True)
class OfficialInstall:
    kind: str  # "overlay" | "venv"
    root: Path

    @property
    def python(self) -> str:
        return sys.executable if self.kind == "overlay" else str(self.root / "bin" / "python")

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.root)} if self.kind == "overlay" else {}


def _pip(python: str, *args: str) -> None:
    command = [python, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise OfficialUnavailable(f"pip {' '.join(args[:1])} failed: {exc}") from exc
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        errors = [line for line in output if line.startswith("ERROR")] or output[-1:]
        raise OfficialUnavailable(f"`pip {' '.join(args)}` failed: {errors[-1][:300]}")


def _installed_versions(overlay: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(name → version) of the overlay's distributions, and of this venv's."""
    layered = {canonicalize_name(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions(path=[str(overlay)])}
    base = {}
    for dist in importlib.metadata.distributions():
        base.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    return layered, base


def unmet_requirements(overlay: Path) -> list[str]:
    """The requirements of the overlay's packages that neither the overlay nor this venv satisfies, extras left out."""
    layered, base = _installed_versions(overlay)
    unmet: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=[str(overlay)]):
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            installed = layered.get(name, base.get(name))
            if installed is None or not requirement.specifier.contains(installed, prereleases=True):
                unmet[name] = f"{requirement.name}{requirement.specifier}"
    return sorted(unmet.values())


@contextlib.contextmanager
def _install_lock(version: str) -> Iterator[None]:
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / f".official-{version}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cached(final: Path) -> OfficialInstall | None:
    try:
        return OfficialInstall(kind=json.loads((final / MARKER).read_text())["kind"], root=final)
    except (OSError, ValueError, KeyError):
        return None


def _build_overlay(stage: Path, version: str) -> OfficialInstall:
    _pip(sys.executable, "install", "--no-deps", "--target", str(stage), f"pipelex-api=={version}")
    for _ in range(MAX_OVERLAY_ROUNDS):
        unmet = unmet_requirements(stage)
        if not unmet:
            return OfficialInstall(kind="overlay", root=stage)
        _pip(sys.executable, "install", "--no-deps", "--target", str(stage), *unmet)
    raise OfficialUnavailable(f"the overlay still misses {unmet_requirements(stage)} after {MAX_OVERLAY_ROUNDS} rounds")


def _build_venv(stage: Path, version: str) -> OfficialInstall:
    base_python = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base_python, "-m", "venv", str(stage)], check=True, capture_output=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise OfficialUnavailable(f"python -m venv failed: {exc}") from exc
    install = OfficialInstall(kind="venv", root=stage)
    _pip(install.python, "install", f"pipelex-api=={version}")
    return install


def check_imports(install: OfficialInstall) -> None:
    """``import pipelex_api.main`` as the server will, in a throwaway home (it loads the runtime's config at import)."""
    with tempfile.TemporaryDirectory(prefix="official-import-") as scratch:
        env = official_env(install, Path(scratch), openai_base_url="http://127.0.0.1:9/v1", api_key="import-check")
        try:
            result = subprocess.run(
                [install.python, "-c", "import pipelex_api.main"],
                cwd=Path(scratch) / "cwd",
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise OfficialUnavailable(f"import pipelex_api.main failed: {exc}") from exc
    if result.returncode != 0:
        raise OfficialUnavailable(f"import pipelex_api.main failed: {result.stderr.strip()[-800:]}")


def install_official(version: str = OFFICIAL_VERSION) -> OfficialInstall:
    """The cached install, or a new one (overlay first, venv if needed). Raises OfficialUnavailable."""
    final = CACHE_ROOT / f"official-{version}"
    if (found := _cached(final)) is not None:
        return found
    with _install_lock(version):
        if (found := _cached(final)) is not None:  # another session installed it while we waited
            return found
        shutil.rmtree(final, ignore_errors=True)  # a directory without its marker is a failed install
        failures = []
        for build in (_build_overlay, _build_venv):
            stage = Path(tempfile.mkdtemp(prefix=f".official-{version}-", dir=CACHE_ROOT))
            try:
                install = build(stage, version)
                check_imports(install)
            except OfficialUnavailable as exc:
                failures.append(f"{build.__name__.removeprefix('_build_')}: {exc}")
                shutil.rmtree(stage, ignore_errors=True)
                continue
            (stage / MARKER).write_text(json.dumps({"kind": install.kind, "version": version, "python": sys.version.split()[0]}))
            stage.rename(final)
            return OfficialInstall(kind=install.kind, root=final)
        raise OfficialUnavailable("; ".join(failures))


def _pipelex_kit_inference() -> Path:
    spec = importlib.util.find_spec("pipelex")  # no import: the package's location is enough
    if spec is None or not spec.submodule_search_locations:
        raise OfficialUnavailable("the pipelex package is not installed in this venv")
    return Path(next(iter(spec.submodule_search_locations))) / "kit" / "configs" / "inference"


def official_env(install: OfficialInstall, workdir: Path, *, openai_base_url: str, api_key: str) -> dict[str, str]:
    """A home, a cwd and the environment of an official server pointed at ``openai_base_url`` (created under workdir)."""
    home, user_home, cwd = workdir / "pipelex-home", workdir / "user-home", workdir / "cwd"
    for directory in (home, user_home, cwd):
        directory.mkdir(parents=True, exist_ok=True)
    # the same inference setup ours writes for itself from OPENAI_BASE_URL: openai at the stub, every other LLM backend off
    prepare_home(
        home=home,
        plan=plan_inference({}, openai_base_url=openai_base_url),
        kit_inference_dir=_pipelex_kit_inference(),
        operator_config_dir=None,
    )
    (home / "pipelex_override.toml").write_text(dump_toml(RUNTIME_OVERRIDES), encoding="utf-8")
    credentials = {name for names in BACKEND_CREDENTIALS.values() for name in names}
    dropped = ("PYTEST", "COV_", "PYTHON", "PIPELEX", "VIRTUAL_ENV")
    base = {key: value for key, value in os.environ.items() if not key.startswith(dropped) and key not in credentials}
    for name in ("AUTH_MODE", "API_KEY", "JWT_SECRET_KEY", "TRUST_FORWARDED_IDENTITY_HEADERS", "OPENAI_BASE_URL", "CORS_ALLOW_ORIGINS"):
        base.pop(name, None)
    return {
        **base,
        **install.env(),
        "HOME": str(user_home),  # ~/.mthds, ~/.pipelex: nothing of this machine's, nothing left in it
        "PIPELEX_HOME": str(home),
        "PIPELEX_USAGE_STATS": "0",
        "PIPELEX_METHODS_FETCH_ON_MISS": "false",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
        "OPENAI_BASE_URL": openai_base_url,
        "AUTH_MODE": "api_key",
        "API_KEY": api_key,
    }


class OfficialServer:
    """The official server in a subprocess on loopback (same stop API as tests.support.server.ServerProcess)."""

    def __init__(self, install: OfficialInstall, workdir: Path, *, openai_base_url: str, api_key: str) -> None:
        self.install = install
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"official-{self.port}.log"
        self.env = official_env(install, workdir, openai_base_url=openai_base_url, api_key=api_key)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> OfficialServer:
        command = [self.install.python, "-m", "uvicorn", "pipelex_api.main:app", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=self.workdir / "cwd", env=self.env, stdout=log, stderr=subprocess.STDOUT)
        STARTED.append(self)  # type: ignore[arg-type]  # same stop(sig) API: the session's safety net stops it too
        try:
            self._wait_ready(timeout)
        except OfficialUnavailable:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise OfficialUnavailable(f"the official server exited with {self.process.returncode}: {self.log()[-1500:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise OfficialUnavailable(f"the official server was not ready after {timeout}s: {self.log()[-1500:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)
