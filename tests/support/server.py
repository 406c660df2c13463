"""A real `pipelex-server serve` in a subprocess, on loopback, for tests that need a process of their own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTED: list[ServerProcess] = []  # every server a test started; the session stops any a failed test left running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.cwd = workdir / "cwd"
        self.data_dir = workdir / "data"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"server-{self.port}.log"
        base = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "COV_"))}
        self.env = {**base, "DATA_DIR": str(self.data_dir), "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, *, wait_ready: bool = True, timeout: float = 60) -> ServerProcess:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"the server on port {self.port} is already running")
        command = [sys.executable, "-m", "pipelex_server.cli", "serve", "--port", str(self.port), *self.args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        STARTED.append(self)
        if wait_ready:
            self.wait_until("/health/ready", timeout=timeout)
        return self

    def wait_until(self, path: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def pid_tree(self) -> list[int]:
        import psutil

        assert self.process is not None
        parent = psutil.Process(self.process.pid)
        return [parent.pid, *(child.pid for child in parent.children(recursive=True))]

    def rss_bytes(self) -> int:
        import psutil

        return sum(psutil.Process(pid).memory_info().rss for pid in self.pid_tree())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        # `with ServerProcess(...).start() as server:` must not spawn a second process: that one cannot bind the port,
        # exits, and `stop` would then signal it while the first keeps running after the test
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_all() -> None:
    for server in STARTED:
        server.stop(signal.SIGKILL)
    STARTED.clear()
