"""The cyclic garbage collector during a server process's boot: off from the command's start until the runtime is warm.

A boot allocates about a million long-lived objects (the imports, the routes' schemas, the runtime, the provider
SDKs) and little garbage. With the collector on, every few thousand allocations start a collection that walks the
growing heap again (~0.13 s before the runtime's boot alone); at the end, one full collection would walk it once more
(~0.33 s) to find ~7,000 objects (~3 MiB, mostly the copies of ``sys.modules`` that ``inspect.signature`` makes when
pydantic inspects a builtin ``default_factory``). So the collector stays off for the whole boot and the boot's objects
are frozen (moved out of every later collection's reach) without that last collection: ~3 MiB kept for the process's
life, for a third of a second less before ready.

After the boot, the youngest generation collects every ``YOUNG_THRESHOLD`` net allocations instead of 700: a run
allocates tens of thousands of short-lived container objects (pydantic models, dicts, the HTTP exchange with the
provider), so at 700 a burst of runs starts hundreds of young collections (~0.1 s per 128 runs); at 10,000 a handful,
each walking only the young objects. Older generations keep their ratios close to the defaults.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_paused_by_command = False


def pause_for_boot() -> None:
    """Called first by the commands that boot a runtime (``serve``, ``worker``): the collector is off until
    ``collector_off`` ends the runtime's boot in this process."""
    global _paused_by_command
    if gc.isenabled():
        gc.disable()
        _paused_by_command = True


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """The runtime's boot: the collector off, and on again at its end when it was on before the boot (or the command
    paused it for the boot), whether the boot succeeded or not."""
    global _paused_by_command
    resume = gc.isenabled() or _paused_by_command
    gc.disable()
    try:
        yield
    finally:
        if resume:
            _paused_by_command = False
            gc.enable()


def resume() -> None:
    """The collector on again if the command paused it and no runtime boot has turned it on yet."""
    global _paused_by_command
    if _paused_by_command:
        _paused_by_command = False
        gc.enable()


YOUNG_THRESHOLD = 10_000


def freeze_boot_objects() -> None:
    """The objects alive now stay alive for the process's life: no later collection walks them again. From now on the
    collector runs at the steady state's pace (``YOUNG_THRESHOLD``)."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 50)
