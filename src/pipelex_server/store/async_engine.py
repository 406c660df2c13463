"""SQLAlchemy's async engine without its ORM: ~5.6 MiB less for the life of every process.

The ``sqlalchemy.ext.asyncio`` package imports, with its engine, its ORM session classes (``AsyncSession`` and co.),
and with them ``sqlalchemy.orm``. The store uses the engine alone (``create_async_engine``, ``AsyncEngine``,
``AsyncConnection``, their results). ``install_engine_only`` registers the package without running its
``__init__``: it imports the engine's and the results' submodules, gives the package their names and starts
SQLAlchemy's greenlet support as ``__init__`` does. The first time anything asks the package for another name
(``from sqlalchemy.ext.asyncio import AsyncSession``), the real ``__init__`` runs in it, once: such code works as
before, at the ORM's price. Nothing is done when the package is already imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

PACKAGE = "sqlalchemy.ext.asyncio"
_ENGINE_NAMES = (
    "AsyncConnection",
    "AsyncEngine",
    "AsyncTransaction",
    "async_engine_from_config",
    "create_async_engine",
    "create_async_pool_from_url",
)
_RESULT_NAMES = ("AsyncMappingResult", "AsyncResult", "AsyncScalarResult", "AsyncTupleResult")
_lock = threading.Lock()


def install_engine_only() -> None:
    with _lock:
        if PACKAGE in sys.modules:
            return
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        try:
            engine = importlib.import_module(f"{PACKAGE}.engine")
            result = importlib.import_module(f"{PACKAGE}.result")
            from sqlalchemy.util import concurrency

            concurrency._concurrency_shim._initialize()
        except BaseException:
            del sys.modules[PACKAGE]
            raise
        for name in _ENGINE_NAMES:
            setattr(package, name, getattr(engine, name))
        for name in _RESULT_NAMES:
            setattr(package, name, getattr(result, name))
        package.__getattr__ = _completer(package)  # type: ignore[method-assign]
        import sqlalchemy.ext

        sqlalchemy.ext.asyncio = package  # type: ignore[attr-defined]


def _completer(package: ModuleType) -> Any:
    def complete(name: str) -> Any:
        """A name the engine-only package lacks: run the real ``__init__`` (the ORM's classes) in it, then look again."""
        with _lock:
            if package.__dict__.pop("__getattr__", None) is not None:
                assert package.__spec__ is not None and package.__spec__.loader is not None
                package.__spec__.loader.exec_module(package)
        if name in package.__dict__:
            return package.__dict__[name]
        raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")

    return complete
