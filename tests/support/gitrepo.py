"""A local bare git repository holding `tests/support/methods/menu_package` at two tags, and the git configuration
(`url.<base>.insteadOf`) that makes its github.com address resolve to it: how tests run `method_ref` with no network."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHODS = Path(__file__).resolve().parent / "methods"
ADDRESS = "github.com/pipelex-server-tests/menu-package"  # the address menu_package's METHODS.toml declares
V2_DISPLAY_NAME = "Menu Card Writer"


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class MenuRepository:
    """The bare repository, its tags' commits, and a global git config file pointing the address at it."""

    root: Path
    bare: Path
    config: Path
    fetch_log: Path  # one line per pack git served from the bare repository (a fetch; `ls-remote` sends none)
    commits: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {"GIT_CONFIG_GLOBAL": str(self.config), "GIT_CONFIG_NOSYSTEM": "1"}

    def fetches(self) -> int:
        return len(self.fetch_log.read_text().splitlines()) if self.fetch_log.exists() else 0

    def mirror(self, address: str, url: str) -> None:
        """Also resolve the repository of ``address`` (github.com/<owner>/<repo>) to ``url``."""
        with self.config.open("a") as handle:
            handle.write(f'[url "{url}"]\n\tinsteadOf = https://{address}.git\n')

    def tag(self, name: str, edit: dict[str, str | None], *, symlinks: dict[str, str] | None = None) -> str:
        """Commit ``edit`` (path -> text, None removes) on top of the last commit, tag it ``name``; its commit."""
        work = self.root / "work"
        for path, text in edit.items():
            target = work / path
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        for path, pointee in (symlinks or {}).items():
            (work / path).symlink_to(pointee)
        _git("add", "-A", cwd=work)
        _git("commit", "-q", "--allow-empty", "-m", name, cwd=work)
        _git("tag", "-a", name, "-m", name, cwd=work)  # annotated: the peeled commit is what runs
        _git("push", "-q", str(self.bare), "HEAD:refs/heads/main", f"refs/tags/{name}", cwd=work)
        self.commits[name] = _git("rev-parse", "HEAD", cwd=work)
        return self.commits[name]


def make_menu_repository(root: Path) -> MenuRepository:
    """v1.0.0: menu_package as it is; v2.0.0: the kitchen writes its card in another voice, and the manifest declares a
    display name. The bare repository's default branch is at v2.0.0."""
    root.mkdir(parents=True, exist_ok=True)
    work, bare = root / "work", root / "menu-package.git"
    shutil.copytree(METHODS / "menu_package", work)
    _git("init", "-q", "-b", "main", cwd=work)
    _git("init", "-q", "--bare", "-b", "main", str(bare))
    fetch_log = root / "fetches.log"
    hook = root / "count-packs.sh"
    hook.write_text(f'#!/bin/sh\necho pack >> "{fetch_log}"\nexec "$@"\n')
    hook.chmod(0o755)
    config = root / "gitconfig"
    config.write_text(f'[url "file://{bare}"]\n\tinsteadOf = https://{ADDRESS}.git\n[uploadpack]\n\tpackObjectsHook = {hook}\n')
    repository = MenuRepository(root=root, bare=bare, config=config, fetch_log=fetch_log)
    repository.tag("v1.0.0", {})
    manifest = (work / "METHODS.toml").read_text()
    menu = (work / "kitchen" / "menu.mthds").read_text()
    repository.tag(
        "v2.0.0",
        {
            "METHODS.toml": manifest.replace('version = "1.0.0"', f'version = "2.0.0"\ndisplay_name = "{V2_DISPLAY_NAME}"'),
            "kitchen/menu.mthds": menu.replace("KITCHEN write a menu card", "KITCHEN V2 write a menu card"),
        },
    )
    return repository


def served_menu_repository(root: Path, monkeypatch: Any) -> MenuRepository:
    """``make_menu_repository`` with its git configuration in this test's environment: git, run by the server, reads
    it, so the package's github.com address resolves to the bare repository (``monkeypatch`` undoes it)."""
    repository = make_menu_repository(root)
    for name, value in repository.env.items():
        monkeypatch.setenv(name, value)
    return repository
