"""The process's one pipelex runtime: its prepared home, its boot, and its sharing between the apps of a process.

The runtime keeps process-wide state (one config, one set of backends), so a process boots it once. Several apps in
one process (tests) share the booted runtime as long as they ask for the same inference plan; the last one to
release it tears it down.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pipelex_server.engine.caches import MIB
from pipelex_server.engine.home import InferencePlan, prepare_home, require_clean_working_directory
from pipelex_server.engine.lazy_packages import install_lazy_packages
from pipelex_server.errors import ConfigurationError
from pipelex_server.settings import Settings


@dataclass
class _BootState:
    plan: InferencePlan | None = None
    home: Path | None = None
    refs: int = 0
    booted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATE = _BootState()


def import_runtime() -> None:
    """Import the runtime's heavy modules (~1.5 s): call it in a thread, off the event loop. The provider SDK's
    re-export packages are made lazy first (lazy_packages.py)."""
    install_lazy_packages()
    importlib.import_module("pipelex.pipelex")
    importlib.import_module("pipelex.pipeline.runner")


def prepare_environment(settings: Settings, plan: InferencePlan) -> None:
    """The runtime's home under DATA_DIR and the environment it reads at import (once per process)."""
    with _STATE.lock:
        if _STATE.booted:
            return
        require_clean_working_directory(Path.cwd())
        home = (settings.data_dir / "pipelex-home").resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PIPELEX_HOME"] = str(home)
        os.environ["DO_NOT_TRACK"] = "1"
        os.environ["PIPELEX_USAGE_STATS"] = "0"
        os.environ["PIPELEX_METHODS_FETCH_ON_MISS"] = "false"
        os.environ.pop("PIPELEXPATH", None)
        from importlib.resources import files

        kit_inference = Path(str(files("pipelex.kit") / "configs" / "inference"))
        prepare_home(home=home, plan=plan, kit_inference_dir=kit_inference, operator_config_dir=settings.pipelex_config_dir)
        _STATE.home = home


def acquire_runtime(settings: Settings, plan: InferencePlan) -> None:
    """Boot the runtime, or join the one this process already booted with the same inference plan."""
    with _STATE.lock:
        if _STATE.booted:
            if _STATE.plan is not None and _STATE.plan.fingerprint != plan.fingerprint:
                raise ConfigurationError("this process's runtime is already booted with another inference plan")
            _STATE.refs += 1
            return
        from pipelex.pipelex import Pipelex
        from pipelex.system.runtime import IntegrationMode

        from pipelex_server.engine.class_discovery import install_class_discovery
        from pipelex_server.engine.storage import PROVIDER, install_input_hook
        from pipelex_server.engine.template_analysis import install_template_analysis_cache
        from pipelex_server.engine.templates import install_template_cache

        Pipelex.make(
            storage_provider=PROVIDER,
            integration_mode=IntegrationMode.FASTAPI,
            needs_inference=plan.is_live,
            config_overrides={
                "runtime": {
                    "tracing": {"is_enabled": False},
                    "log": {
                        "sink": "json",
                        "pretty_print_mode": "silent",
                        "package_log_levels": {"pipelex": settings.runtime_log_level},
                    },
                    "storage": {"method": "in_memory"},
                },
                "interpreter": {"methods": {"fetch_on_miss": False}},
            },
        )
        install_template_cache(int(settings.template_cache_max_mib * MIB))
        install_template_analysis_cache()
        install_input_hook()
        install_class_discovery()
        _STATE.plan = plan
        _STATE.booted = True
        _STATE.refs = 1


def release_runtime() -> None:
    """Give back one hold on the runtime; the last one tears it down."""
    with _STATE.lock:
        _STATE.refs -= 1
        if _STATE.refs > 0 or not _STATE.booted:
            return
        from pipelex.pipelex import Pipelex

        with contextlib.suppress(Exception):
            Pipelex.get_instance().teardown()
        _STATE.booted = False
        _STATE.plan = None
