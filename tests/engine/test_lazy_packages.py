"""Lazy re-export packages: the same names as the written ``__init__``, imported only when asked for."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelex_server.engine.lazy_packages import LazyReexportFinder, read_reexports

PACKAGE = "lazy_reexport_sample"


def test_read_reexports_maps_names_to_their_submodules():
    source = textwrap.dedent(
        '''
        """Docstring."""
        from __future__ import annotations
        from .alpha import Alpha as Alpha, helper
        from .beta.gamma import (
            Gamma,
            Delta as Renamed,
        )
        from . import epsilon
        __all__ = ["Alpha", "Gamma"]
        '''
    )
    read = read_reexports(source)
    assert read is not None
    assert read.exports == {
        "Alpha": ("alpha", "Alpha"),
        "helper": ("alpha", "helper"),
        "Gamma": ("beta.gamma", "Gamma"),
        "Renamed": ("beta.gamma", "Delta"),
        "epsilon": ("epsilon", None),
    }
    assert read.all_names == ["Alpha", "Gamma"]
    assert read.future_names == ("annotations",)


@pytest.mark.parametrize(
    "source",
    [
        "from .alpha import *",
        "import os\nfrom .alpha import Alpha",
        "from .alpha import Alpha\nclass Local(Alpha):\n    pass",
        "from ..outer import Thing",
        "from .alpha import Alpha\n__all__ = [name for name in ('Alpha',)]",
        "from .alpha import Alpha\nAlpha.model_rebuild()",
        "this is not python",
    ],
)
def test_an_init_that_does_more_than_reexport_is_left_to_run(source):
    assert read_reexports(source) is None


def _write_package(root: Path, init: str) -> None:
    package = root / PACKAGE
    (package / "deep").mkdir(parents=True)
    (package / "__init__.py").write_text(init)
    # every submodule records its import, so the test sees what was imported and when
    record = f"import sys\nsys.modules['{PACKAGE}_log'].append(__name__)\n"
    (package / "alpha.py").write_text(record + "class Alpha:\n    pass\n")
    (package / "beta.py").write_text(record + "class Beta:\n    pass\nVALUE = 42\n")
    (package / "deep" / "__init__.py").write_text("")
    (package / "deep" / "leaf.py").write_text(record + "from .. import Alpha\nclass Leaf(Alpha):\n    pass\n")


@pytest.fixture
def sample(tmp_path, monkeypatch):
    """A sample package on sys.path, found through a finder of its own (removed afterwards)."""
    log: list[str] = []
    monkeypatch.setitem(sys.modules, f"{PACKAGE}_log", log)  # type: ignore[arg-type]
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = LazyReexportFinder([PACKAGE])
    sys.meta_path.insert(0, finder)
    yield tmp_path, log
    sys.meta_path.remove(finder)
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


REEXPORT_INIT = (
    '"""Sample."""\nfrom .alpha import Alpha as Alpha\nfrom .beta import Beta, VALUE as ANSWER\nfrom . import deep\n'
    '__all__ = ["Alpha", "Beta", "ANSWER"]\n'
)


def test_names_are_imported_from_their_submodule_on_first_access(sample):
    root, log = sample
    _write_package(root, REEXPORT_INIT)
    package = importlib.import_module(PACKAGE)
    assert log == []  # the package alone imports nothing
    from lazy_reexport_sample import Alpha  # type: ignore[import-not-found]

    assert log == [f"{PACKAGE}.alpha"]
    assert Alpha.__module__ == f"{PACKAGE}.alpha"
    assert package.ANSWER == 42
    assert log == [f"{PACKAGE}.alpha", f"{PACKAGE}.beta"]
    assert package.Beta is sys.modules[f"{PACKAGE}.beta"].Beta
    assert package.__all__ == ["Alpha", "Beta", "ANSWER"]
    assert {"Alpha", "Beta", "ANSWER", "deep"} <= set(dir(package))
    assert package.__file__ == str(root / PACKAGE / "__init__.py")


def test_submodules_import_as_usual_and_reach_the_lazy_names(sample):
    root, log = sample
    _write_package(root, REEXPORT_INIT)
    leaf = importlib.import_module(f"{PACKAGE}.deep.leaf")  # imports Alpha through the package
    assert issubclass(leaf.Leaf, sys.modules[f"{PACKAGE}.alpha"].Alpha)
    assert f"{PACKAGE}.beta" not in log
    assert importlib.import_module(PACKAGE).deep is sys.modules[f"{PACKAGE}.deep"]


def test_an_unknown_name_is_an_attribute_error(sample):
    root, _log = sample
    _write_package(root, REEXPORT_INIT)
    package = importlib.import_module(PACKAGE)
    assert not hasattr(package, "Missing")
    with pytest.raises(AttributeError, match="has no attribute 'Missing'"):
        _ = package.Missing
    with pytest.raises(ImportError):
        exec(f"from {PACKAGE} import Missing", {})


def test_an_init_with_other_statements_runs_as_written(sample):
    root, log = sample
    _write_package(root, "from .alpha import Alpha\nfrom .beta import Beta\nLOADED = True\n")
    package = importlib.import_module(PACKAGE)
    assert package.LOADED is True
    assert log == [f"{PACKAGE}.alpha", f"{PACKAGE}.beta"]
    assert not hasattr(package, "__lazy_exports__")


# The real provider SDK, in fresh interpreters: every name its lazy packages export is the object the written
# ``__init__`` gives, and a first live run's imports stay a fraction of the SDK.
_PROBE = textwrap.dedent(
    """
    import importlib, json, sys
    if sys.argv[1] == "lazy":
        from pipelex_server.engine.lazy_packages import install_lazy_packages
        install_lazy_packages()
    import openai
    count_after_import = sum(1 for name in sys.modules if name.startswith("openai"))
    asked = json.loads(sys.stdin.read() or "null")
    names = {}
    for package_name in ("openai.types", "openai.resources", "openai.types.responses", "openai.types.chat"):
        package = importlib.import_module(package_name)
        public = sorted(name for name in dir(package) if not name.startswith("_"))
        exported = asked[package_name] if asked else public  # the lazy side resolves every name the eager side has
        names[package_name] = {
            name: f"{getattr(getattr(package, name), '__module__', '')}.{getattr(getattr(package, name), '__qualname__', name)}"
            for name in exported
        }
    print(json.dumps({"names": names, "count_after_import": count_after_import}))
    """
)


def _in_fresh_interpreter(code: str, *args: str, given: object = None) -> dict:
    """Run ``code`` in a new interpreter with this checkout's sources (``given`` as JSON on its stdin): its JSON answer."""
    source_root = Path(__file__).resolve().parents[2] / "src"
    answer = subprocess.run(
        [sys.executable, "-c", code, *args],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PYTHONPATH": str(source_root), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(answer.stdout)


def _probe(mode: str, asked: dict | None = None) -> dict:
    return _in_fresh_interpreter(_PROBE, mode, given=asked)


@pytest.mark.slow
def test_the_provider_sdk_exports_the_same_objects_lazily():
    eager = _probe("eager")
    lazy = _probe("lazy", {package_name: sorted(names) for package_name, names in eager["names"].items()})
    assert lazy["names"].keys() == eager["names"].keys()
    for package_name, names in eager["names"].items():
        assert len(names) > 10, package_name
        assert lazy["names"][package_name] == names, package_name
    # importing the SDK no longer imports every type and resource module
    assert lazy["count_after_import"] < eager["count_after_import"] / 2


_WARM_PROBE = textwrap.dedent(
    """
    import json, sys
    from pipelex_server.engine.home import InferencePlan
    from pipelex_server.engine.lazy_packages import install_lazy_packages
    from pipelex_server.engine.warmup import import_provider_modules
    install_lazy_packages()
    import_provider_modules(InferencePlan(enabled=("openai",), openai_base_url="http://127.0.0.1:9/v1"))
    before = {name for name in sys.modules if name.startswith("openai")}
    import openai
    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    client.responses, client.chat.completions  # what a first live run reaches (pipelex's workers)
    from openai.types.responses import Response, ResponseInputFileParam, ResponseInputImageParam
    from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
    print(json.dumps({"warmed": len(before), "new": sorted({n for n in sys.modules if n.startswith("openai")} - before)}))
    """
)


@pytest.mark.slow
def test_the_warm_up_imports_what_a_first_live_run_reaches_through_the_lazy_packages():
    probe = _in_fresh_interpreter(_WARM_PROBE)
    assert probe["warmed"] > 100
    assert probe["new"] == []
