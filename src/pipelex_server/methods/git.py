"""Git as a subprocess under a deadline: resolve a remote ref, fetch one commit, read a commit's tree and blobs.

Git runs with the process's own environment and configuration (so an operator's `url.<base>.insteadOf` mirrors and
`GIT_CONFIG_GLOBAL` apply), never prompts for credentials, and never checks anything out: files are read from the
commit's objects (`ls-tree` + `cat-file --batch`), so no filter, hook or attribute of the repository runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

MODE_SYMLINK = "120000"
MODE_SUBMODULE = "160000"
MODE_EXECUTABLE = "100755"
_STDERR_SHOWN = 300  # characters of git's own message kept in a problem's detail


class GitFailed(Exception):
    """A git command failed (``timed_out`` when the deadline passed, ``missing`` when git is not installed)."""

    def __init__(self, message: str, *, timed_out: bool = False, missing: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.missing = missing


@dataclass(frozen=True)
class TreeEntry:
    mode: str
    object_sha: str
    path: str
    size: int  # 0 for a submodule


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # a private or missing repository fails at once, never waits for a password
    env.setdefault("GIT_ASKPASS", "true")
    return env


class Git:
    """Runs git commands, each bounded by the caller's deadline (a ``time.monotonic()`` instant)."""

    def __init__(self, executable: str = "git") -> None:
        self.executable = executable
        self.invocations: list[list[str]] = []  # every command run, for the logs and the tests

    async def run(self, args: list[str], *, deadline: float, stdin: bytes | None = None, cwd: Path | None = None) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GitFailed("the time allowed to fetch the method ran out", timed_out=True)
        self.invocations.append(list(args))
        try:
            process = await asyncio.create_subprocess_exec(
                self.executable,
                *args,
                cwd=cwd,
                env=_environment(),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a timed-out git and its helpers are killed together
            )
        except FileNotFoundError as exc:
            raise GitFailed("git is not installed on this server", missing=True) from exc
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout=remaining)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(BaseException):
                await process.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise GitFailed("the time allowed to fetch the method ran out", timed_out=True) from None
        if process.returncode != 0:
            message = stderr.decode("utf-8", "replace").strip().splitlines()
            shown = " ".join(message)[-_STDERR_SHOWN:] or f"git exited with status {process.returncode}"
            raise GitFailed(shown)
        return stdout

    async def ls_remote(self, url: str, patterns: list[str], *, deadline: float) -> list[tuple[str, str]]:
        """``(sha, ref name)`` pairs the remote advertises for these patterns (no clone)."""
        output = await self.run(["ls-remote", "--", url, *patterns], deadline=deadline)
        pairs = []
        for line in output.decode("utf-8", "replace").splitlines():
            sha, _, name = line.partition("\t")
            if name:
                pairs.append((sha.strip(), name.strip()))
        return pairs

    async def fetch_commit(self, url: str, ref: str, *, into: Path, deadline: float) -> str:
        """Fetch ``ref`` of ``url`` (history depth 1) into a new bare repository at ``into``; the commit it names."""
        await self.run(["init", "--bare", "--quiet", "--template=", str(into)], deadline=deadline)
        await self.run(
            ["-C", str(into), "fetch", "--quiet", "--no-tags", "--depth", "1", "--", url, f"+{ref}:refs/pinned"], deadline=deadline
        )
        output = await self.run(["-C", str(into), "rev-parse", "--verify", "refs/pinned^{commit}"], deadline=deadline)
        return output.decode("ascii").strip()

    async def ls_tree(self, repo: Path, commit: str, *, deadline: float) -> list[TreeEntry]:
        """Every entry of the commit's tree (recursively), by its path from the repository's root."""
        output = await self.run(["-C", str(repo), "ls-tree", "-r", "-z", "-l", "--full-tree", commit], deadline=deadline)
        entries = []
        for record in output.split(b"\0"):
            if not record:
                continue
            header, _, raw_path = record.partition(b"\t")
            mode, _kind, object_sha, size = header.decode("ascii").split(maxsplit=3)
            path = raw_path.decode("utf-8", "surrogateescape")
            entries.append(TreeEntry(mode=mode, object_sha=object_sha, path=path, size=int(size) if size.strip().isdigit() else 0))
        return entries

    async def read_blobs(self, repo: Path, object_shas: list[str], *, deadline: float) -> dict[str, bytes]:
        """The bytes of these objects, read in one ``cat-file --batch``, by object id."""
        wanted = sorted(set(object_shas))
        if not wanted:
            return {}
        output = await self.run(
            ["-C", str(repo), "cat-file", "--batch"], deadline=deadline, stdin="".join(f"{sha}\n" for sha in wanted).encode("ascii")
        )
        contents: dict[str, bytes] = {}
        cursor = 0
        for sha in wanted:
            line_end = output.index(b"\n", cursor)
            header = output[cursor:line_end].decode("ascii").split(" ")
            if len(header) != 3 or header[0] != sha:
                raise GitFailed(f"could not read object {sha} of the fetched commit")
            size = int(header[2])
            start = line_end + 1
            contents[sha] = output[start : start + size]
            cursor = start + size + 1
        return contents
