"""A method tree made ready for the runtime: written into a fresh server-owned temporary directory, held as written,
its entry pipe chosen as the runtime chooses it, and removed when the run or validation ends (failures included).

The runtime then loads the directory as the caller's one library directory (``library_dirs=[dir]``,
``library_dirs_are_callers=True``): its `.mthds` files are the method's bundles and every other file one a step may
read (a PipeDocGen ``template_file``), each named by its tree path, never by the directory on this host.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelex_server.engine.method_tree_files import MethodTreeFiles

if TYPE_CHECKING:
    from mthds.method_tree.models import MethodTree

# How the entry rule's messages name a sent method ("The method sent in the request holds no ...").
METHOD_LABEL = "sent in the request"

_base_lock = threading.Lock()
_base_dir: Path | None = None


def trees_base_dir() -> Path:
    """This process's own directory for written trees (under the system's temporary directory, private to the user;
    never the process's cwd), removed when the process exits. Each run writes into a fresh directory below it."""
    global _base_dir
    with _base_lock:
        if _base_dir is None or not _base_dir.is_dir():
            _base_dir = Path(tempfile.mkdtemp(prefix="pipelex-server-trees-"))
            atexit.register(shutil.rmtree, _base_dir, ignore_errors=True)
        return _base_dir


@dataclass(frozen=True)
class WrittenTree:
    """A tree written for one run: its directory, the pipe the run starts at, and the directories its dependency
    trees were written under (each holding one package directory: the runtime's ``methods_dirs``), None for none."""

    directory: Path
    pipe_code: str | None
    methods_dirs: list[Path] | None = None


def dependency_dir_name(address: str) -> str:
    """The directory a dependency tree is written as: its address's last segment, the name a reference finds it by."""
    return address.rsplit("/", 1)[-1]


def select_entry_pipe(tree: MethodTreeFiles, written: MethodTree) -> str:
    """The pipe a run of the tree starts at when it names none, by the protocol's rule (`select_entry`): the
    manifest's `main_pipe` when the tree holds a `METHODS.toml`, else the one `main_pipe` its bundles declare."""
    from mthds.method_tree.discovery import MANIFEST_NAME
    from mthds.package.manifest.parser import parse_methods_toml
    from pipelex.pipeline.method_entry import read_method_candidates, select_entry

    candidates = read_method_candidates(tree=written)
    manifest_bytes = tree.contents.get(MANIFEST_NAME)
    manifest = parse_methods_toml(manifest_bytes.decode("utf-8")) if manifest_bytes is not None else None  # checked when read
    return select_entry(candidates=candidates, manifest=manifest, method_label=METHOD_LABEL).pipe_ref


def _write(tree: MethodTreeFiles, pipe_code: str | None, releases: contextlib.ExitStack, *, entry: str) -> WrittenTree:
    """Blocking: write, hold, and (when asked) choose the entry. Every release is pushed before the next step, so
    closing ``releases`` undoes exactly what was done."""
    from pipelex.libraries.written_trees import WRITTEN_METHOD_TREES, write_method_tree

    temp_dir = Path(tempfile.mkdtemp(prefix="run-", dir=trees_base_dir()))
    releases.callback(shutil.rmtree, temp_dir, ignore_errors=True)
    method_dir = temp_dir / "tree"
    written = write_method_tree(contents=tree.contents, destination=method_dir, expected_digest=tree.digest)
    releases.enter_context(WRITTEN_METHOD_TREES.holding(tree=written))
    methods_dirs: list[Path] = []
    for index, (address, dependency) in enumerate(tree.dependencies.items()):
        methods_dir = temp_dir / f"methods-{index}"  # one each, so two dependencies sharing a name never meet
        written_dependency = write_method_tree(
            contents=dependency.contents, destination=methods_dir / dependency_dir_name(address), expected_digest=dependency.digest
        )
        releases.enter_context(WRITTEN_METHOD_TREES.holding(tree=written_dependency))
        methods_dirs.append(methods_dir)
    if pipe_code is None and entry != "none":
        try:
            pipe_code = select_entry_pipe(tree, written)
        except Exception:
            if entry == "required":
                raise
            # a validation still validates a tree with no entry pipe (and reports a bundle that does not parse)
    return WrittenTree(directory=written.directory or method_dir, pipe_code=pipe_code, methods_dirs=methods_dirs or None)


@contextlib.asynccontextmanager
async def written_tree(tree: MethodTreeFiles, *, pipe_code: str | None, entry: str = "required") -> AsyncIterator[WrittenTree]:
    """Write ``tree`` for one run (off the event loop, in the runtime's method-load pool) and remove it on the way
    out, whatever happens. With no ``pipe_code``, the entry pipe is chosen: ``entry="required"`` raises the runtime's
    own error when there is none (a run), ``"optional"`` leaves it None (a validation)."""
    from pipelex.libraries.method_load_threads import run_method_load

    releases = contextlib.ExitStack()
    try:
        yield await run_method_load(_write, tree, pipe_code, releases, entry=entry)
    finally:
        await run_method_load(releases.close)
