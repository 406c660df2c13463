"""The loaded-library cache: a method's validated library, kept as its crate, so a run of the same method skips the
parse, the blueprint load (for a method tree, writing it to disk and listing it too) and the library validation.

The first run (or setup check) of a method loads it the runtime's way, from ``mthds_contents`` or its written tree.
The job it builds carries the library's crate (the qualified blueprints the runtime loaded and validated); that crate
is kept here, as JSON, under the digest of the method's texts (a tree's digest), the entry pipe asked for and the
runtime's version. A later run of the same method opens a fresh library of its own, loads the crate into it without
validating it again (the runtime's ``is_crate_prevalidated``: a crate this very runtime version validated), and runs
its entry pipe from that library. When that run succeeds, the library is kept for the next run of the method
(engine/library_pool.py: one run at a time per library, bounded by LIBRARY_POOL_SIZE); otherwise it is torn down.

Why it is safe:

- a library is lent to one run at a time, rebuilt from the JSON text or kept from an earlier successful run of the
  same method: concurrent runs of a method share no object (each library has its own class registry, so the concept
  classes of two runs never meet), and the runtime keeps nothing of a run in its library;
- the key is the digest of everything the load reads (the texts, the entry pipe, the runtime version), and an entry
  is never updated: a changed method is another key, so an entry is never stale;
- only methods whose runs read nothing beyond the crate are cached: inline bundles without submitted files, and
  method trees with no dependency tree, no Python file and no file a bundle names (a template); none that calls a
  dependency package (``alias->...``: a crate carries no dependency); no call with output overrides
  (``output_name``, ``output_multiplicity``, ``dynamic_output_concept_ref``), which could shape the job beyond the
  method. Those runs load as before;
- only a load that succeeded is kept, so every refusal (a bad bundle, an unknown pipe) still comes from a full load.

Bounded by LIBRARY_CACHE_SIZE entries and LIBRARY_CACHE_MAX_MIB (each entry counted as its JSON bytes), least
recently used first out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from pipelex_server.engine.caches import MIB, ByteLRU
from pipelex_server.engine.library_pool import LibraryPool
from pipelex_server.engine.method_tree_files import MethodTreeFiles

MANIFEST_NAME = "METHODS.toml"

# A bundle calls a dependency package's pipes and concepts as ``alias->name``: such a bundle is never cached (a text that
# merely contains the mark loses the cache, never its correctness).
DEPENDENCY_MARK = "->"


def _runtime_version() -> str:
    try:
        return metadata.version("pipelex")
    except metadata.PackageNotFoundError:  # pragma: no cover - the runtime is a dependency
        return "unknown"


@dataclass(frozen=True)
class CachedLibrary:
    """A method's validated crate (JSON) and the qualified ref of the entry pipe its runs start from."""

    crate_json: str
    entry_ref: str


class LibraryCache:
    """Crates of methods by digest (see the module docstring); safe to share between runs and threads."""

    def __init__(self, *, max_entries: int, max_mib: float, pool_size: int = 0) -> None:
        self._entries = ByteLRU(max_bytes=int(max_mib * MIB), max_entries=max_entries)
        self.pool = LibraryPool(max_idle=pool_size if self._entries.enabled else 0)
        self._version = _runtime_version()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self._entries.enabled

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._entries.bytes

    def clear(self) -> None:
        self._entries.clear()
        self.pool.clear()

    def key(self, *, mthds_contents: list[str] | None, pipe_code: str | None, plain: bool) -> str | None:
        """The cache key of a call, or None when the call is not cacheable (``plain`` is False for a call with a
        method tree beside the bundles, or output overrides)."""
        if not self.enabled or not plain or not mthds_contents:
            return None
        if any(DEPENDENCY_MARK in text for text in mthds_contents):
            return None  # it may call a dependency package by address: a crate carries no dependency, load it whole
        return self._digest("bundles", pipe_code or "", *mthds_contents)

    def _digest(self, *parts: str) -> str:
        digest = hashlib.sha256()
        for part in (self._version, *parts):
            encoded = part.encode()
            digest.update(len(encoded).to_bytes(8, "big"))
            digest.update(encoded)
        return digest.hexdigest()

    def tree_key(self, tree: MethodTreeFiles, *, pipe_code: str | None) -> str | None:
        """The cache key of a run of a method tree (a `files` map, a `bundle_b64`, a `method_ref`), or None when the
        tree is not cacheable: its runs must read no file beyond what the crate holds, so no dependency tree, no
        ``alias->`` call, no Python file, and no other file whose path or name a bundle mentions (a template); a file
        no bundle names (a README) is never read."""
        if not self.enabled or tree.dependencies:
            return None
        texts = tree.bundle_texts()
        if any(DEPENDENCY_MARK in text for text in texts):
            return None
        for path in tree.contents:
            if path.endswith(".mthds") or path == MANIFEST_NAME:
                continue
            name = path.rsplit("/", 1)[-1]
            if path.endswith(".py") or any(path in text or name in text for text in texts):
                return None
        return self._digest("tree", tree.digest, pipe_code or "")

    def call_key(self, *, mthds_contents: list[str] | None, pipe_code: str | None, plain: bool, tree: MethodTreeFiles | None) -> str | None:
        """The cache key of a call: inline bundles by ``key``, a method tree by ``tree_key``; None for a tree sent beside
        bundles (the files their steps read) and for a call that is not ``plain`` (output overrides)."""
        if tree is None:
            return self.key(mthds_contents=mthds_contents, pipe_code=pipe_code, plain=plain)
        if plain and not mthds_contents:
            return self.tree_key(tree, pipe_code=pipe_code)
        return None

    def get(self, key: str | None) -> CachedLibrary | None:
        if key is None:
            return None
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def remember(self, key: str | None, pipe_job: Any) -> None:
        """Keep the crate of the job a full load built (its library was loaded and validated by this runtime)."""
        if key is None or key in self._entries:
            return
        crate = getattr(pipe_job, "library_crate", None)
        if crate is None:
            return
        entry = CachedLibrary(crate_json=crate.model_dump_json(), entry_ref=pipe_job.pipe.pipe_ref)
        self._entries.put(key, entry, len(entry.crate_json) + len(entry.entry_ref))

    async def open(self, key: str, entry: CachedLibrary) -> str:
        """A library of the entry's method lent to one run: an idle one the pool kept from an earlier run of it, or a
        fresh one loaded from the crate (in the runtime's method-load threads, off the event loop). Returns its id;
        ``release`` it when the run (or check) it was lent to is over."""
        reused = self.pool.take(key)
        if reused is not None:
            return reused
        from pipelex.interpreter_hub import get_library_manager
        from pipelex.libraries.method_load_threads import run_method_load

        manager = get_library_manager()
        library_id, _library = manager.open_library()
        try:
            await run_method_load(_load_crate, library_id, entry.crate_json)
        except BaseException:
            self.pool.give_back(library_id, reusable=False)
            raise
        self.pool.lend(key, library_id)
        return library_id

    def release(self, library_id: str, *, reusable: bool) -> None:
        """The run a library was lent to is over: kept for the next run of its method when ``reusable`` (the run
        succeeded) and the pool has room, torn down otherwise (engine/library_pool.py)."""
        self.pool.give_back(library_id, reusable=reusable)


def _load_crate(library_id: str, crate_json: str) -> None:
    from pipelex.interpreter_hub import get_library_manager
    from pipelex.libraries.library_crate import LibraryCrate

    crate = LibraryCrate.model_validate_json(crate_json)
    get_library_manager().load_from_crate(library_id=library_id, crate=crate, is_crate_prevalidated=True)


class CapturingPipeRun:
    """Wraps the pipe run a runner calls: keeps the crate of the job the runtime built, then runs it as asked."""

    def __init__(self, cache: LibraryCache, key: str, inner: Any = None) -> None:
        self.cache = cache
        self.key = key
        self.inner = inner

    async def run(self, pipe_job: Any, **kwargs: Any) -> Any:
        self.cache.remember(self.key, pipe_job)
        inner = self.inner
        if inner is None:
            from pipelex.interpreter_hub import get_pipe_run

            inner = get_pipe_run()
        return await inner.run(pipe_job, **kwargs)
