"""Setup checks already passed: a /start whose check is the very one that passed before is acknowledged without
running it again (no library opened, no job shaped), so the ack does little more than validate, persist and enqueue.

A check's verdict is a function of what it reads. It is remembered only when that is all in its key:

- the method: the loaded-library cache key (``LibraryCache.key``/``tree_key``: the digest of the method's texts, the
  entry pipe and the runtime version), so only methods whose load reads nothing beyond their texts; a changed method
  is another key, so a verdict is never stale;
- the inputs, as canonical JSON, only when nothing in them could be fetched or read: no URL input (``{"url": ...}``,
  whatever its form, a relative path or storage key too) and no string with ``://`` or ``data:``; such inputs are
  shaped from their own text alone, and nothing is stored for them;
- the caller's scope and the run mode (dry or live).

Only a check that passed is remembered: a refusal always comes from a full check, so every refused request gets the
same problem as before. Bounded (CHECK_VERDICTS_MAX_ENTRIES keys), least recently used first out.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipelex_server.engine.caches import ByteLRU
from pipelex_server.engine.library_cache import LibraryCache
from pipelex_server.engine.method_tree_files import MethodTreeFiles
from pipelex_server.engine.types import CheckedSetup
from pipelex_server.input_limits import url_count

CHECK_VERDICTS_MAX_ENTRIES = 4096
_KEY_BYTES = 128  # a hex SHA-256 and the crate's fingerprint: what an entry costs
_REACHING_MARKS = ("://", "data:")


def _reaches_out(value: Any) -> bool:
    """Whether a string in ``value`` (a key or a value, at any depth) could name something to fetch or read."""
    if isinstance(value, str):
        return any(mark in value for mark in _REACHING_MARKS)
    if isinstance(value, dict):
        return any(_reaches_out(key) or _reaches_out(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_reaches_out(item) for item in value)
    return False


class CheckVerdicts:
    """The keys of checks that passed (see the module docstring)."""

    def __init__(self, libraries: LibraryCache, *, max_entries: int = CHECK_VERDICTS_MAX_ENTRIES) -> None:
        self.libraries = libraries
        self._passed = ByteLRU(max_bytes=max_entries * _KEY_BYTES, max_entries=max_entries)
        self.hits = 0

    def key(
        self,
        *,
        pipe_code: str | None,
        mthds_contents: list[str] | None,
        inputs: dict[str, Any] | None,
        plain: bool,
        dry_run: bool,
        scope: str,
        tree: MethodTreeFiles | None,
    ) -> str | None:
        """The key of a check, or None when its verdict may depend on more than the key (then it is never kept)."""
        method = self.libraries.call_key(mthds_contents=mthds_contents, pipe_code=pipe_code, plain=plain, tree=tree)
        if method is None or url_count(inputs) or _reaches_out(inputs or {}):
            return None
        try:
            canonical = json.dumps(inputs or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):
            return None
        digest = hashlib.sha256()
        for part in (method, "dry" if dry_run else "live", scope, canonical):
            encoded = part.encode()
            digest.update(len(encoded).to_bytes(8, "big"))
            digest.update(encoded)
        return digest.hexdigest()

    def passed(self, key: str | None) -> CheckedSetup | None:
        """The check of ``key`` that passed (no rewrites; its crate's fingerprint), or None."""
        found = None if key is None else self._passed.get(key)
        if found is None:
            return None
        self.hits += 1
        return found

    def remember(self, key: str | None, checked: CheckedSetup | None = None) -> None:
        if key is not None:
            self._passed.put(key, checked or CheckedSetup(), _KEY_BYTES)

    def __len__(self) -> int:
        return len(self._passed)
