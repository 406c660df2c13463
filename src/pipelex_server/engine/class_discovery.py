"""The runtime's discovery of structure classes at each library load, reading what modules hold instead of asking
them for it.

Every library load registers the ``StructuredContent`` subclasses of every module in ``sys.modules``
(``ClassRegistryUtils.auto_register_all_subclasses``). The runtime asks each module with ``inspect.getmembers``,
which calls ``getattr`` on every name a module lists: modules that build attributes on demand then build them. The
first load of a server's life so imports ~290 modules nothing uses (``openai``'s module-level clients resolve
theirs, among them the realtime resources, which load ``websockets``, whose lazy names load ``werkzeug``): ~7.5 MiB
kept for the process's life. And the scan of ~4,000 modules costs ~45 ms of CPU on every load.

This scan reads each module's ``__dict__`` and tests types with ``type(obj)``, which no proxy can intercept: it finds
every class a module defines or imported (the classes in memory, which is what the discovery is for) and builds
nothing. What it does not see is an attribute a module would only create when asked (a lazy ``__getattr__``
export, a proxy): that is not a class in memory yet. ~13 ms a scan.
"""

from __future__ import annotations

import sys
from typing import Any


def registered_subclasses(base_class: type[Any]) -> list[type[Any]]:
    """The subclasses of ``base_class`` the loaded modules hold (``base_class`` excluded), in module order."""
    found: list[type[Any]] = []
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for value in list(namespace.values()):
            if value is base_class or not issubclass(type(value), type):
                continue
            try:
                if issubclass(value, base_class):
                    found.append(value)
            except (AttributeError, ImportError, TypeError):  # a metaclass whose subclass check fails: not ours
                continue
    return found


def _auto_register_all_subclasses(cls: Any, base_class: type[Any]) -> int:
    from pipelex.runtime_hub import get_class_registry

    registry = get_class_registry()
    registered = 0
    for candidate in registered_subclasses(base_class):
        if not registry.has_class(name=candidate.__name__):
            registry.register_class(candidate)
            registered += 1
    return registered


def install_class_discovery() -> None:
    """Replace the runtime's scan (idempotent)."""
    from pipelex.system.registries.class_registry_utils import ClassRegistryUtils

    ClassRegistryUtils.auto_register_all_subclasses = classmethod(_auto_register_all_subclasses)  # type: ignore[method-assign, assignment]
