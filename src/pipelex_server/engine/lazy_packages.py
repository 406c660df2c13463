"""The provider SDK's re-export packages, initialised lazily: a name is imported from its submodule when first asked for.

``openai.types`` and ``openai.resources`` (and their subpackages) are ``__init__`` files that only re-export the
names of their submodules (``from .batch import Batch as Batch`` ...). Importing one of them, or any module inside
them, runs the whole ``__init__`` and so imports every submodule: the first live run imports ~1,300 ``openai``
modules (~0.6 s, several MiB) of which it uses a few hundred (the Responses and Chat types and resources).

For the packages under ``LAZY_PREFIXES`` this finder keeps the package's real spec and loader (its ``__path__``, its
submodules, its file) but replaces the execution of its ``__init__`` with a map read from the file's syntax tree:
``name -> (submodule, attribute)``. The module's ``__getattr__`` imports the submodule on first access and keeps the
value in the module, so ``from openai.types import Batch``, ``openai.types.Batch``, ``import openai.types.batch`` and
``hasattr`` behave as before; ``dir()`` and ``__all__`` list the same names. An ``__init__`` that does anything else
than relative ``from`` imports, a docstring and a literal ``__all__`` is executed as written (nothing is guessed).
"""

from __future__ import annotations
import __future__

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

LAZY_PREFIXES: tuple[str, ...] = ("openai.types", "openai.resources")

Exports = dict[str, tuple[str, str | None]]  # name -> (relative submodule, attribute or None for the submodule itself)


@dataclass(frozen=True)
class Reexports:
    """What an ``__init__`` that only re-exports binds: its names, its literal ``__all__``, its ``__future__`` names."""

    exports: Exports
    all_names: list[str] | None = None
    future_names: tuple[str, ...] = ()


def read_reexports(source: str) -> Reexports | None:
    """The names an ``__init__`` re-exports; ``None`` when it does anything else."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    exports: Exports = {}
    all_names: list[str] | None = None
    future_names: list[str] = []
    for statement in tree.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str):
            continue
        if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
            future_names.extend(alias.asname or alias.name for alias in statement.names)
            continue
        if isinstance(statement, ast.ImportFrom) and statement.level == 1:
            for alias in statement.names:
                if alias.name == "*":
                    return None
                bound = alias.asname or alias.name
                exports[bound] = (alias.name, None) if statement.module is None else (statement.module, alias.name)
            continue
        if _is_literal_all(statement):
            assert isinstance(statement, ast.Assign) and isinstance(statement.value, ast.List | ast.Tuple)
            all_names = [element.value for element in statement.value.elts if isinstance(element, ast.Constant)]
            continue
        return None
    return Reexports(exports, all_names, tuple(future_names))


def _is_literal_all(statement: ast.stmt) -> bool:
    if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
        return False
    target, value = statement.targets[0], statement.value
    return (
        isinstance(target, ast.Name)
        and target.id == "__all__"
        and isinstance(value, ast.List | ast.Tuple)
        and all(isinstance(element, ast.Constant) and isinstance(element.value, str) for element in value.elts)
    )


class _LazyInitLoader(importlib.abc.Loader):
    """Creates the package as its own loader would, then installs the lazy names instead of running ``__init__``."""

    def __init__(self, real: importlib.abc.Loader, reexports: Reexports) -> None:
        self.real = real
        self.reexports = reexports

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        install_lazy_names(module, self.reexports)


def install_lazy_names(module: ModuleType, reexports: Reexports) -> None:
    """Give ``module`` a ``__getattr__`` that imports each re-exported name from its submodule on first access.

    A name it does not re-export but that is one of its submodules is imported too: the written ``__init__`` imported
    every submodule, so ``package.submodule`` worked without importing it first, and code may rely on that."""
    package = module.__name__
    exports = reexports.exports

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            if name.startswith("__") or importlib.util.find_spec(f"{package}.{name}") is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            return importlib.import_module(f"{package}.{name}")  # the import system sets it on the package
        submodule, attribute = target
        # No lock of ours: the import system serialises the submodule's import; two threads asking at once both
        # store the same object.
        imported = importlib.import_module(f"{package}.{submodule}")
        value = imported if attribute is None else getattr(imported, attribute)
        module.__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(module.__dict__) | set(exports))

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__dir__ = __dir__  # type: ignore[method-assign]
    for name in reexports.future_names:
        setattr(module, name, getattr(__future__, name))
    if reexports.all_names is not None:
        module.__all__ = reexports.all_names
    module.__lazy_exports__ = exports  # type: ignore[attr-defined]


class LazyReexportFinder(importlib.abc.MetaPathFinder):
    """Finds the packages under ``prefixes`` with the regular path finder and makes their re-exports lazy."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        self.prefixes = tuple(prefixes)

    def _covers(self, fullname: str) -> bool:
        return any(fullname == prefix or fullname.startswith(prefix + ".") for prefix in self.prefixes)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not self._covers(fullname):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is None or spec.origin is None or spec.loader is None:
            return spec
        try:
            with open(spec.origin, encoding="utf-8") as handle:
                source = handle.read()
        except OSError:
            return spec
        reexports = read_reexports(source)
        if reexports is not None:
            spec.loader = _LazyInitLoader(spec.loader, reexports)
        return spec


_installed: LazyReexportFinder | None = None
_install_lock = threading.Lock()


def install_lazy_packages(prefixes: Sequence[str] = LAZY_PREFIXES) -> bool:
    """Put the finder first on ``sys.meta_path`` (once per process). Packages imported before stay as they are.
    Returns whether this call installed it."""
    global _installed
    with _install_lock:
        if _installed is not None:
            return False
        _installed = LazyReexportFinder(prefixes)
        sys.meta_path.insert(0, _installed)
        return True
