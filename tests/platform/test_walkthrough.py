"""docs/platform.md's walkthrough, run as written: its method files, its SDK program and its curl script, against a
live server (AUTH_MODE=jwt, local storage): create_method -> publish -> execute(method_id=...) -> download_artifacts,
and the same five calls with curl."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_documents import make_pdf
from tests.support.catalog import jwt_env, sdk, token
from tests.support.server import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.slow

DOC = (REPO_ROOT / "docs" / "platform.md").read_text()


def block_after(marker: str, language: str) -> str:
    """The first fenced block of ``language`` after the HTML comment ``marker``."""
    found = re.search(rf"<!-- {re.escape(marker)}[^>]*-->\s*```{language}\n(.*?)```", DOC, re.S)
    assert found, f"docs/platform.md has no {language} block after {marker}"
    return found.group(1)


def method_files() -> dict[str, str]:
    """The method's files, as the doc shows them (each toml block opening with `# <path>`)."""
    return {match.group(1): match.group(2) for match in re.finditer(r"```toml\n# (pdf-reader/\S+)\n(.*?)```", DOC, re.S)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("walkthrough"), env=jwt_env(stub.base_url)) as running:
        yield running


@pytest.fixture
def workdir(tmp_path: Path) -> tuple[Path, bytes]:
    files = method_files()
    assert sorted(files) == ["pdf-reader/METHODS.toml", "pdf-reader/read.mthds"]
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    pdf = make_pdf("walkthrough page one")
    (tmp_path / "report.pdf").write_bytes(pdf)
    return tmp_path, pdf


def run(command: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


async def test_the_sdk_walkthrough_runs_as_documented(server: ServerProcess, workdir: tuple[Path, bytes]) -> None:
    cwd, pdf = workdir
    out = run(
        [sys.executable, "-c", block_after("walkthrough:sdk", "python")],
        cwd=cwd,
        env={"PIPELEX_API_KEY": token("walker"), "PIPELEX_BASE_URL": server.url},
    )
    method_id, version, run_id, *saved = out.split()
    assert method_id.startswith("mt_") and version == "1"
    assert [Path(path).read_bytes() for path in saved] == [pdf]
    async with sdk(server, "walker") as client:
        method = await client.get_method(method_id)
        assert method.latest_version == 1 and sorted(item.path for item in method.files) == ["METHODS.toml", "read.mthds"]
        assert (await client.get_run_status(run_id)).status == "COMPLETED"


async def test_the_curl_walkthrough_runs_as_documented(server: ServerProcess, workdir: tuple[Path, bytes]) -> None:
    cwd, pdf = workdir
    out = run(["bash", "-c", block_after("walkthrough:curl", "bash")], cwd=cwd, env={"BASE": server.url, "TOKEN": token("curler")})
    method_id, run_id = out.split()[-2:]
    assert [path.read_bytes() for path in (cwd / "curl-out").iterdir()] == [pdf]
    async with sdk(server, "curler") as client:
        versions = await client.list_method_versions(method_id)
        assert [item.version for item in versions.items] == [1]
        status = await client.get_run_status(run_id)
        assert status.status == "COMPLETED"
