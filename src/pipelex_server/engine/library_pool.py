"""Loaded libraries kept between runs of the same cached method, so a run takes one ready to use instead of loading
the method's crate again (~3 ms of CPU for a one-pipe method, most of it the runtime's template analysis).

A library taken from the pool is *lent* to one run at a time: two concurrent runs of one method never share a library
(the second takes another idle one, or loads its own). The runtime tears a run's library down at the run's end; for a
lent library that teardown is deferred to the pool (the manager's ``teardown`` is wrapped once), and the pool keeps
the library for the next run only when the run it was lent to succeeded: a run or check that failed, was cancelled or
was interrupted gives its library back to be torn down, never reused.

Why reuse is safe: a library holds what the load built (domains, concepts, pipes, the concept classes it generated)
and nothing of a run; the runtime builds every run's job (inputs, working memory, metadata) apart from it and mutates
no library while running ("build the pipe job (pure — no registration, telemetry, graph open, or library mutation)").
The pool is keyed by the loaded-library cache's key (the method's digest, its entry pipe and the runtime's version),
so a changed method never meets an old library. Bounded: at most LIBRARY_POOL_SIZE idle libraries in all and
``PER_KEY`` per method, least recently returned out first (torn down).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from typing import Any

PER_KEY = 32  # a burst of one method keeps its libraries: 32 runs in flight reuse 32, not 4 (28 loads each time)
_POOLS: weakref.WeakSet[LibraryPool] = weakref.WeakSet()


def idle_library_ids() -> set[str]:
    """The libraries every live pool of this process keeps idle (the runtime holds them; no run uses them)."""
    return {library_id for pool in list(_POOLS) for library_id in list(pool._idle)}


class LibraryPool:
    """Idle loaded libraries by cache key, and the ids lent to runs (see the module docstring)."""

    def __init__(self, *, max_idle: int) -> None:
        self.max_idle = max(0, int(max_idle))
        self._idle: OrderedDict[str, str] = OrderedDict()  # library id -> cache key, least recently returned first
        self._lent: dict[str, str] = {}  # library id -> cache key
        self._lock = threading.Lock()
        self._manager: Any = None
        self._real_teardown: Any = None
        self.reused = 0
        _POOLS.add(self)

    @property
    def enabled(self) -> bool:
        return self.max_idle > 0

    def __len__(self) -> int:
        return len(self._idle)

    def take(self, key: str) -> str | None:
        """An idle library of ``key``, now lent to the caller's run; None when there is none."""
        if not self.enabled:
            return None
        manager = self._guarded_manager()
        while True:
            with self._lock:
                library_id = next((lid for lid, k in reversed(self._idle.items()) if k == key), None)
                if library_id is None:
                    return None
                del self._idle[library_id]
            if library_id in getattr(manager, "_libraries", {}):
                with self._lock:
                    self._lent[library_id] = key
                self.reused += 1
                return library_id
            # torn down behind the pool's back (the runtime's teardown of every library at shutdown): forget it

    def lend(self, key: str, library_id: str) -> None:
        """A library just loaded for ``key`` goes to a run: its teardown comes back to the pool."""
        if not self.enabled:
            return
        self._guarded_manager()
        with self._lock:
            self._lent[library_id] = key

    def give_back(self, library_id: str, *, reusable: bool) -> None:
        """The run the library was lent to is over: keep it idle when ``reusable`` and there is room, else tear it down
        (and with it the least recently returned idle library beyond the bounds)."""
        with self._lock:
            key = self._lent.pop(library_id, None)
            doomed: list[str] = []
            if key is not None and reusable and self.enabled:
                self._idle[library_id] = key
                if sum(1 for k in self._idle.values() if k == key) > PER_KEY:
                    doomed.append(next(lid for lid, k in self._idle.items() if k == key))
                    del self._idle[doomed[-1]]
                while len(self._idle) > self.max_idle:
                    doomed.append(self._idle.popitem(last=False)[0])
            else:
                doomed.append(library_id)
        for lid in doomed:
            self._teardown(lid)

    def clear(self) -> None:
        with self._lock:
            doomed = list(self._idle)
            self._idle.clear()
        for lid in doomed:
            self._teardown(lid)

    # ---------------------------------------------------------------- the runtime's teardown, deferred for lent ids

    def _guarded_manager(self) -> Any:
        from pipelex.interpreter_hub import get_library_manager

        manager = get_library_manager()
        if self._manager is not manager:
            real = manager.teardown

            def teardown(library_id: str | None = None) -> None:
                if library_id and library_id in self._lent:
                    return  # the run's end: the pool decides (give_back)
                real(library_id=library_id)

            manager.teardown = teardown
            self._manager, self._real_teardown = manager, real
        return manager

    def _teardown(self, library_id: str) -> None:
        real = self._real_teardown
        if real is None:
            from pipelex.interpreter_hub import get_library_manager

            real = get_library_manager().teardown
        with contextlib.suppress(Exception):  # already gone (LibraryError): nothing to free
            real(library_id=library_id)
