"""The one door to the pipelex runtime: boot, warm-up, execute, validate, models, versions.

The runtime keeps process-wide state (one config, one set of backends), so a process boots it once. Several
apps in one process (tests) share the booted runtime as long as they ask for the same inference plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import importlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelex_server.engine.home import InferencePlan, plan_inference, prepare_home, require_clean_working_directory
from pipelex_server.errors import ApiProblem, ConfigurationError
from pipelex_server.fetch import Fetcher
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectStore

logger = logging.getLogger(__name__)

WARM_UP_BUNDLE = """domain = "warmup"
main_pipe = "echo"

[pipe.echo]
type = "PipeLLM"
description = "Warm-up"
inputs = { text = "Text" }
output = "Text"
prompt = "Echo: $text"
"""

# Modules the first live run would otherwise import lazily (~0.8 s): provider SDK resources and types, instructor's
# provider handlers, the runtime's provider factories. Imported (not called) at warm-up, for the enabled backends.
LIVE_WARM_MODULES: dict[str, tuple[str, ...]] = {
    "openai": (
        "pipelex.providers.openai.openai_responses_llm_worker",
        "pipelex.providers.openai.openai_completions_llm_worker",
        "pipelex.providers.openai.openai_client_factory",
        "pipelex.providers.openai.openai_responses_factory",
        "pipelex.providers.openai.openai_exceptions",
        "openai.types.responses",
        "openai.resources.responses",
        "openai.resources.chat",
        "openai.lib.streaming.responses",
        "openai.lib._parsing._responses",
        "instructor.v2.providers.openai.client",
        "instructor.v2.providers.openai.handlers",
        "instructor.mode",
        "requests",
        "truststore",
        "jiter",
        "httpcore2._async.connection_pool",
        "httpcore2._async.http11",
        "httpcore2._backends.anyio",
        "anyio._backends._asyncio",
        "anyio.streams.tls",
    ),
    "anthropic": ("pipelex.providers.anthropic", "anthropic.types", "anthropic.resources.messages", "instructor.v2.providers.anthropic"),
    "mistral": ("instructor.v2.providers.mistral",),
    "google": ("instructor.v2.providers.genai",),
}

ProgressSink = Callable[[str, dict[str, Any]], None]


@dataclass
class Checkpoints:
    """What a run saved of its finished steps (``saved``: step key -> working memory dump), and how to save more."""

    saved: dict[str, dict[str, Any]]
    save: Callable[[str, str, dict[str, Any]], Awaitable[None]]


@dataclass
class RunOutcome:
    """A completed run, already shaped as JSON."""

    main_stuff_name: str
    pipe_output: dict[str, Any]
    usage: dict[str, Any]
    input_rewrites: dict[str, str] = field(default_factory=dict)


@dataclass
class _BootState:
    plan: InferencePlan | None = None
    home: Path | None = None
    refs: int = 0
    booted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATE = _BootState()


def _warm_openai_response_parsing() -> None:
    """The OpenAI SDK builds its response validators lazily on the first parse (~0.18 s): build them now."""
    from openai._models import construct_type
    from openai.types.responses import Response

    sample = {
        "id": "resp_warm",
        "object": "response",
        "created_at": 0,
        "model": "warm",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "m",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "", "annotations": []}],
            },
            {"type": "function_call", "id": "f", "call_id": "c", "name": "n", "arguments": "{}", "status": "completed"},
        ],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": 2,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
    construct_type(type_=Response, value=sample)


def _call_arguments(
    pipe_code: str | None,
    mthds_contents: list[str] | None,
    inputs: dict[str, Any] | None,
    output_name: str | None,
    output_multiplicity: Any,
    dynamic_output_concept_ref: str | None,
    request_id: str | None,
) -> dict[str, Any]:
    """The runtime's ``execute`` arguments for one request (the run and its setup check pass the same)."""
    return {
        "pipe_code": pipe_code,
        "mthds_contents": mthds_contents or None,
        "inputs": inputs or {},
        "output_name": output_name,
        "output_multiplicity": output_multiplicity,
        "dynamic_output_concept_ref": dynamic_output_concept_ref,
        "request_id": request_id,
    }


class _SetupChecked(Exception):
    """Raised by the setup-only pipe run once the job is built: the bundle and inputs are valid."""


class _SetupOnlyPipeRun:
    """A pipe run that stops right after the runtime built the job (bundle loaded, pipe resolved, inputs shaped)."""

    async def run(self, pipe_job: Any, **_kwargs: Any) -> Any:
        # the entry pipe's own presence check (what the run does first): a missing input fails here
        await pipe_job.pipe.validate_before_run(
            job_metadata=pipe_job.job_metadata,
            working_memory=pipe_job.working_memory,
            pipe_run_params=pipe_job.pipe_run_params,
        )
        raise _SetupChecked


TEMPLATE_CACHE_SIZE = 2048


def _install_template_cache() -> None:
    """Reuse compiled prompt templates across runs.

    The runtime compiles every prompt template again on every run, each time in a fresh Jinja environment (~15% of
    a run's CPU under load). A compiled template depends only on its source and its environment's settings, and
    its render budget is per render, so the same template is safe to reuse. Only the plain case is cached (no
    template registry for includes, no custom finalize); everything else compiles as before.
    """
    from pipelex.tools.jinja2 import jinja2_rendering

    original = jinja2_rendering._compile_jinja2_template
    if getattr(original, "_pipelex_server_cached", False):
        return
    cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
    lock = threading.Lock()

    def compile_cached(template_source: str, **options: Any) -> Any:
        if options.get("use_registry") or options.get("finalize") is not None:
            return original(template_source, **options)
        key = (
            template_source,
            options.get("template_category"),
            options.get("enable_async", True),
            options.get("is_undefined_strict", False),
        )
        with lock:
            template = cache.get(key)
            if template is not None:
                cache.move_to_end(key)
                return template
        template = original(template_source, **options)  # raises for a bad template: nothing is cached
        with lock:
            cache[key] = template
            while len(cache) > TEMPLATE_CACHE_SIZE:
                cache.popitem(last=False)
        return template

    compile_cached._pipelex_server_cached = True  # type: ignore[attr-defined]
    jinja2_rendering._compile_jinja2_template = compile_cached  # type: ignore[assignment]


def _import_runtime() -> None:
    importlib.import_module("pipelex.pipelex")
    importlib.import_module("pipelex.pipeline.runner")


class Engine:
    """Per-app handle on the process's runtime."""

    def __init__(self, settings: Settings, *, store: ObjectStore, fetcher: Fetcher) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.plan = plan_inference(os.environ, openai_base_url=settings.openai_base_url)
        self.ready = asyncio.Event()
        self.boot_error: BaseException | None = None
        self.boot_seconds: float | None = None
        self._verdicts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._acquired = False

    # ---------------------------------------------------------------- boot

    async def start(self) -> None:
        """Boot (or join) the process's runtime, then warm it. Sets ``ready``; records a boot error."""
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._prepare_environment)
            await asyncio.to_thread(_import_runtime)
            self._boot()
            from pipelex_server.engine.storage import PROVIDER

            PROVIDER.default = self.store
            for warning in self.plan.warnings:
                logger.warning(warning)
            if self.settings.warm_up:
                await self._warm_up()
            # The runtime and the provider SDKs leave ~a million long-lived objects behind; moving them out of the
            # collector's reach keeps each full collection from walking them again under load.
            gc.collect()
            gc.freeze()
            self.boot_seconds = time.perf_counter() - started
            logger.info("runtime ready in %.2fs (live backends: %s)", self.boot_seconds, ", ".join(self.plan.enabled))
        except BaseException as exc:
            self.boot_error = exc
            logger.exception("the pipelex runtime failed to boot")
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.ready.set()

    def _prepare_environment(self) -> None:
        with _STATE.lock:
            if _STATE.booted:
                return
            require_clean_working_directory(Path.cwd())
            home = (self.settings.data_dir / "pipelex-home").resolve()
            home.mkdir(parents=True, exist_ok=True)
            os.environ["PIPELEX_HOME"] = str(home)
            os.environ["DO_NOT_TRACK"] = "1"
            os.environ["PIPELEX_USAGE_STATS"] = "0"
            os.environ["PIPELEX_METHODS_FETCH_ON_MISS"] = "false"
            os.environ.pop("PIPELEXPATH", None)
            from importlib.resources import files

            kit_inference = Path(str(files("pipelex.kit") / "configs" / "inference"))
            prepare_home(
                home=home,
                plan=self.plan,
                kit_inference_dir=kit_inference,
                operator_config_dir=self.settings.pipelex_config_dir,
            )
            _STATE.home = home

    def _boot(self) -> None:
        with _STATE.lock:
            if _STATE.booted:
                if _STATE.plan is not None and _STATE.plan.fingerprint != self.plan.fingerprint:
                    raise ConfigurationError("this process's runtime is already booted with another inference plan")
                _STATE.refs += 1
                self._acquired = True
                return
            from pipelex.pipelex import Pipelex
            from pipelex.system.runtime import IntegrationMode

            from pipelex_server.engine.storage import PROVIDER, install_input_hook

            Pipelex.make(
                storage_provider=PROVIDER,
                integration_mode=IntegrationMode.FASTAPI,
                needs_inference=self.plan.is_live,
                config_overrides={
                    "runtime": {
                        "tracing": {"is_enabled": False},
                        "log": {
                            "sink": "json",
                            "pretty_print_mode": "silent",
                            "package_log_levels": {"pipelex": self.settings.runtime_log_level},
                        },
                        "storage": {"method": "in_memory"},
                    },
                    "interpreter": {"methods": {"fetch_on_miss": False}},
                },
            )
            _install_template_cache()
            install_input_hook()
            _STATE.plan = self.plan
            _STATE.booted = True
            _STATE.refs = 1
            self._acquired = True

    async def _warm_up(self) -> None:
        if self.plan.is_live:
            await asyncio.to_thread(self._import_provider_modules)
        from pipelex.pipeline.runner import PipelexMTHDSProtocol
        from pipelex.system.pipe_run_mode import PipeRunMode

        from pipelex_server.engine.storage import bound

        runner = PipelexMTHDSProtocol(pipe_run_mode=PipeRunMode.DRY, library_dirs=[])
        with bound(self.store):
            await runner.execute(mthds_contents=[WARM_UP_BUNDLE], inputs={"text": "warm"})
        await self.validate(mthds_contents=[WARM_UP_BUNDLE], pipe_code=None)
        self._verdicts.clear()

    def _import_provider_modules(self) -> None:
        for backend in self.plan.enabled:
            for name in LIVE_WARM_MODULES.get(backend, ()):
                with contextlib.suppress(Exception):
                    importlib.import_module(name)
        if "openai" in self.plan.enabled:
            with contextlib.suppress(Exception):
                _warm_openai_response_parsing()

    def stop(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        with _STATE.lock:
            _STATE.refs -= 1
            if _STATE.refs > 0 or not _STATE.booted:
                return
            from pipelex.pipelex import Pipelex

            with contextlib.suppress(Exception):
                Pipelex.get_instance().teardown()
            _STATE.booted = False
            _STATE.plan = None

    async def wait_ready(self, timeout: float = 60.0) -> None:
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError as exc:
                raise ApiProblem(status=503, code="server.not_ready", detail="The runtime is still booting.") from exc
        if self.boot_error is not None:
            raise ApiProblem(
                status=503,
                code="server.not_ready",
                detail="The pipelex runtime failed to boot; see the server log.",
            )

    # ---------------------------------------------------------------- runs

    def refuse_live_if_unconfigured(self) -> None:
        from pipelex import runtime_hub

        if not self.plan.is_live or runtime_hub.is_dry_run_forced():
            raise ApiProblem(
                status=503,
                code="inference.not_configured",
                detail=(
                    "No inference backend is configured, so a live run cannot execute. Set a provider key "
                    "(OPENAI_API_KEY, ANTHROPIC_API_KEY, GOOGLE_API_KEY, MISTRAL_API_KEY, ...) or OPENAI_BASE_URL "
                    'for an OpenAI-compatible endpoint, then restart the server; or send "dry_run": true.'
                ),
                params={"variables": ["OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY"]},
            )

    def _runner(self, *, dry_run: bool, scope: str, storage_scope: str, has_bundle: bool, pipe_run: Any = None) -> Any:
        from pipelex.config import get_config
        from pipelex.pipeline.runner import PipelexMTHDSProtocol
        from pipelex.system.pipe_run_mode import PipeRunMode

        # An inline bundle is self-contained; only a bare pipe_code reaches the server's own library.
        library_dirs: list[str] = [] if has_bundle else [str(path) for path in self.settings.library_dirs]
        execution_config = get_config().interpreter.pipeline_execution.with_execution_overrides(generate_graph=False)
        return PipelexMTHDSProtocol(
            pipe_run_mode=PipeRunMode.DRY if dry_run else PipeRunMode.LIVE,
            library_dirs=library_dirs,
            user_id=scope,
            storage_scope=storage_scope,
            read_scope=scope,
            execution_config=execution_config,
            pipe_run=pipe_run,
        )

    async def execute(
        self,
        *,
        pipe_code: str | None,
        mthds_contents: list[str] | None,
        inputs: dict[str, Any] | None,
        output_name: str | None,
        output_multiplicity: Any,
        dynamic_output_concept_ref: str | None,
        dry_run: bool,
        scope: str,
        storage_scope: str,
        request_id: str | None,
        progress: ProgressSink | None = None,
        checkpoints: Checkpoints | None = None,
    ) -> RunOutcome:
        """Run one pipeline to its end. Raises ``ApiProblem`` for every failure (already translated).

        ``scope`` is the caller's namespace (what the run may read); ``storage_scope`` the run's own prefix under it,
        where fetched and relocated inputs are stored. With ``checkpoints``, each finished step of the top-level
        pipeline is saved, and steps saved by an earlier attempt of the same run are not executed again."""
        from pipelex import runtime_hub
        from pipelex.interpreter_hub import scoped_pipe_router
        from pipelex.pipe_run.pipe_router import PipeRouter
        from pipelex.pipe_run.pipe_run import PipeRun

        from pipelex_server.engine.events import ProgressObserver, RunEventLog
        from pipelex_server.engine.problems import problem_from_exception
        from pipelex_server.engine.results import shape_outcome
        from pipelex_server.engine.storage import InputResolution, bound

        if not dry_run:
            self.refuse_live_if_unconfigured()
        arguments = _call_arguments(
            pipe_code, mthds_contents, inputs, output_name, output_multiplicity, dynamic_output_concept_ref, request_id
        )
        observer = ProgressObserver(progress) if progress is not None else None
        router: Any = None
        if checkpoints is not None and not dry_run:
            from pipelex_server.engine.checkpoints import CheckpointingRouter

            def restored(key: str, pipe_code: str) -> None:
                if progress is not None:
                    progress("pipe_finished", {"pipe_code": pipe_code, "step": key, "restored": True})

            router = CheckpointingRouter(observer=observer, saved=checkpoints.saved, save=checkpoints.save, restored=restored)
        elif observer is not None:
            router = PipeRouter(observer=observer)
        pipe_run = PipeRun(pipe_router=router) if router is not None else None
        runner = self._runner(dry_run=dry_run, scope=scope, storage_scope=storage_scope, has_bundle=bool(mthds_contents), pipe_run=pipe_run)
        event_log = RunEventLog(progress)
        resolution = InputResolution(store=self.store, fetcher=self.fetcher, storage_scope=storage_scope)
        try:
            with (
                bound(self.store, resolution),
                runtime_hub.scoped_event_log(event_log),
                scoped_pipe_router(router) if router else contextlib.nullcontext(),
            ):
                result = await runner.execute(**arguments)
            outcome = shape_outcome(result)
            outcome.input_rewrites = resolution.rewrites
            return outcome
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise problem_from_exception(exc, request_id=request_id) from exc
        finally:
            event_log.close()

    async def check(
        self,
        *,
        pipe_code: str | None,
        mthds_contents: list[str] | None,
        inputs: dict[str, Any] | None,
        output_name: str | None,
        output_multiplicity: Any,
        dynamic_output_concept_ref: str | None,
        dry_run: bool,
        scope: str,
        storage_scope: str,
        request_id: str | None,
    ) -> dict[str, str]:
        """Everything a run does before its first pipe: parse and load the bundle, resolve the pipe, shape the
        inputs (remote and ``data:`` inputs are fetched and stored). Raises the same problem the run would (422 for
        a bad bundle or input); runs nothing. Returns the URL rewrites (original URL -> storage URI)."""
        from pipelex_server.engine.problems import problem_from_exception
        from pipelex_server.engine.storage import InputResolution, bound

        if not dry_run:
            self.refuse_live_if_unconfigured()
        arguments = _call_arguments(
            pipe_code, mthds_contents, inputs, output_name, output_multiplicity, dynamic_output_concept_ref, request_id
        )
        runner = self._runner(
            dry_run=dry_run, scope=scope, storage_scope=storage_scope, has_bundle=bool(mthds_contents), pipe_run=_SetupOnlyPipeRun()
        )
        resolution = InputResolution(store=self.store, fetcher=self.fetcher, storage_scope=storage_scope)
        try:
            with bound(self.store, resolution):
                await runner.execute(**arguments)
        except _SetupChecked:
            return resolution.rewrites
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc.__cause__, _SetupChecked) or isinstance(exc.__context__, _SetupChecked):
                return resolution.rewrites
            raise problem_from_exception(exc, request_id=request_id) from exc
        raise RuntimeError("the setup check ran the pipeline")  # pragma: no cover - _SetupOnlyPipeRun never returns

    async def validate(self, *, mthds_contents: list[str], pipe_code: str | None) -> dict[str, Any]:
        """Static validation plus a dry run of every pipe; a verdict for any text (cached by content hash)."""
        from pipelex.pipeline.runner import PipelexMTHDSProtocol
        from pipelex.system.pipe_run_mode import PipeRunMode

        from pipelex_server.engine.results import shape_validation, shape_validation_failure

        key = hashlib.sha256(repr((mthds_contents, pipe_code)).encode()).hexdigest()
        cached = self._verdicts.get(key)
        if cached is not None:
            self._verdicts.move_to_end(key)
            return cached
        runner = PipelexMTHDSProtocol(pipe_run_mode=PipeRunMode.DRY, library_dirs=[])
        extra = {"graph_pipe_code": pipe_code} if pipe_code else None
        try:
            report = await runner.validate(mthds_contents=mthds_contents, extra=extra)
            verdict = shape_validation(report, pipe_code=pipe_code)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            verdict = shape_validation_failure(exc)
        if self.settings.validate_cache_size:
            self._verdicts[key] = verdict
            while len(self._verdicts) > self.settings.validate_cache_size:
                self._verdicts.popitem(last=False)
        return verdict

    async def models(self) -> dict[str, Any]:
        from pipelex.pipeline.runner import PipelexMTHDSProtocol

        deck = await PipelexMTHDSProtocol(library_dirs=[]).models()
        document = deck.model_dump(mode="json")
        document["backends"] = {
            "enabled": [name for name in self.plan.enabled],
            "live": self.plan.is_live,
            "single_llm_provider": self.plan.single_llm_provider,
        }
        return document

    @staticmethod
    def versions() -> dict[str, str]:
        from importlib import metadata

        def version_of(package: str) -> str:
            try:
                return metadata.version(package)
            except metadata.PackageNotFoundError:
                return "unknown"

        from mthds.protocol.protocol import PROTOCOL_VERSION

        protocol = str(PROTOCOL_VERSION)
        return {
            "runtime_version": version_of("pipelex"),
            "protocol_version": protocol,
        }
