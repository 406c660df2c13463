"""The structure-class discovery of a library load finds the classes modules hold, and builds nothing they would
only create when asked (lazy module attributes, proxies)."""

from __future__ import annotations

import inspect
import sys
import types
import warnings
from collections.abc import Iterator

import pytest
from pipelex.core.stuffs.structured_content import StructuredContent
from pipelex.system.registries.class_registry_utils import ClassRegistryUtils

from pipelex_server.engine.class_discovery import install_class_discovery, registered_subclasses


class _Tripwire:
    """A proxy in the manner of openai's module-level clients: asking its class builds what it stands for."""

    touched = False

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        _Tripwire.touched = True
        raise AssertionError("the discovery resolved a proxy")


@pytest.fixture
def modules() -> Iterator[tuple[types.ModuleType, types.ModuleType]]:
    defining = types.ModuleType("pipelex_server_test_structures")

    class Invoice(StructuredContent):
        number: str

    Invoice.__module__ = defining.__name__
    defining.Invoice = Invoice  # type: ignore[attr-defined]
    defining.not_a_class = Invoice(number="1")  # type: ignore[attr-defined]

    lazy = types.ModuleType("pipelex_server_test_lazy")
    asked: list[str] = []

    def module_getattr(name: str) -> object:
        asked.append(name)
        raise AttributeError(name)

    lazy.__getattr__ = module_getattr  # type: ignore[method-assign]
    lazy.__dir__ = lambda: ["built_on_demand", "client"]  # type: ignore[method-assign]
    lazy.client = _Tripwire()  # type: ignore[attr-defined]
    lazy.asked = asked  # type: ignore[attr-defined]
    sys.modules[defining.__name__] = defining
    sys.modules[lazy.__name__] = lazy
    _Tripwire.touched = False
    yield defining, lazy
    del sys.modules[defining.__name__]
    del sys.modules[lazy.__name__]


def test_the_classes_modules_hold_are_found_and_nothing_is_built(modules):
    defining, lazy = modules
    found = registered_subclasses(StructuredContent)
    assert defining.Invoice in found
    assert StructuredContent not in found
    assert not _Tripwire.touched
    assert lazy.asked == []


def test_it_finds_what_the_runtimes_scan_finds(modules):
    del sys.modules["pipelex_server_test_lazy"]  # the runtime's scan would resolve the proxy
    try:
        by_members = {
            obj
            for module in list(sys.modules.values())
            for obj in _classes(module)
            if obj is not StructuredContent and issubclass(obj, StructuredContent)
        }
    finally:
        sys.modules["pipelex_server_test_lazy"] = modules[1]
    assert by_members <= set(registered_subclasses(StructuredContent))


def test_installed_the_runtime_registers_through_it(modules, monkeypatch):
    # put back whatever the class held once the test is over (pytest keeps a class's own attribute as it was)
    monkeypatch.setattr(ClassRegistryUtils, "auto_register_all_subclasses", ClassRegistryUtils.__dict__["auto_register_all_subclasses"])
    install_class_discovery()
    registered: list[type] = []

    class Registry:
        def has_class(self, name: str) -> bool:
            return False

        def register_class(self, cls: type) -> None:
            registered.append(cls)

    monkeypatch.setattr("pipelex.runtime_hub.get_class_registry", Registry)
    assert ClassRegistryUtils.auto_register_all_subclasses(base_class=StructuredContent) == len(registered)
    assert modules[0].Invoice in registered
    assert not _Tripwire.touched


def _classes(module: object) -> list[type]:
    """The runtime's own way of listing a module's classes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return [obj for _, obj in inspect.getmembers(module, inspect.isclass)]
        except (AttributeError, ImportError, TypeError):
            return []
