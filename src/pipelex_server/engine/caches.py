"""A least-recently-used cache bounded by bytes (and optionally by entries), safe to share between threads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

MIB = 1024 * 1024


class ByteLRU:
    """Keeps values with the size the caller measured for them, once, at insert.

    After every insert, the least recently used entries are evicted until both bounds hold: the total size is at
    most ``max_bytes`` and, when ``max_entries`` is given, there are at most that many entries. A value larger than
    the whole byte budget is not cached at all (it would evict everything and then itself). A bound of 0 disables
    the cache.
    """

    def __init__(self, *, max_bytes: int, max_entries: int | None = None) -> None:
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self.max_bytes = max(0, int(max_bytes))
        self.max_entries = None if max_entries is None else max(0, int(max_entries))

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any, size: int) -> bool:
        """Cache ``value`` as ``size`` bytes; returns whether it is cached."""
        size = max(0, int(size))
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous[1]
            if not self.enabled or size > self.max_bytes:
                return False
            self._entries[key] = (value, size)
            self._bytes += size
            self._evict()
            return True

    def resize(self, *, max_bytes: int, max_entries: int | None = None) -> None:
        with self._lock:
            self.max_bytes = max(0, int(max_bytes))
            self.max_entries = None if max_entries is None else max(0, int(max_entries))
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and self.max_entries != 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def _evict(self) -> None:
        while self._entries and (self._bytes > self.max_bytes or (self.max_entries is not None and len(self._entries) > self.max_entries)):
            _key, (_value, size) = self._entries.popitem(last=False)
            self._bytes -= size
