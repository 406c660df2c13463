"""The one door to the pipelex runtime for an app: its handle on the booted runtime (execute, check, validate, models).

Booting and sharing the process's runtime is in ``boot``, warming it in ``warmup``, readiness in ``readiness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pipelex_server.engine.boot import acquire_runtime, import_runtime, prepare_environment, release_runtime
from pipelex_server.engine.caches import MIB, ByteLRU
from pipelex_server.engine.home import plan_inference
from pipelex_server.engine.readiness import Readiness
from pipelex_server.engine.warmup import warm_up
from pipelex_server.errors import ApiProblem
from pipelex_server.fetch import Fetcher
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectStore

logger = logging.getLogger(__name__)

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


def verdict_bytes(verdict: dict[str, Any]) -> int:
    """A verdict's weight in the cache: the length of its compact JSON encoding."""
    return len(json.dumps(verdict, separators=(",", ":"), ensure_ascii=False, default=str).encode())


class Engine:
    """Per-app handle on the process's runtime."""

    def __init__(self, settings: Settings, *, store: ObjectStore, fetcher: Fetcher) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.plan = plan_inference(os.environ, openai_base_url=settings.openai_base_url)
        self.readiness = Readiness()
        self.boot_seconds: float | None = None
        # verdicts by content hash, bounded by VALIDATE_CACHE_SIZE entries and VALIDATE_CACHE_MAX_MIB (JSON bytes)
        self._verdicts = ByteLRU(max_bytes=int(settings.validate_cache_max_mib * MIB), max_entries=settings.validate_cache_size)
        self._acquired = False

    @property
    def ready(self) -> asyncio.Event:
        """Set when the boot has ended, whether it succeeded or not (``boot_error`` tells which)."""
        return self.readiness.event

    @property
    def boot_error(self) -> BaseException | None:
        return self.readiness.error

    # ---------------------------------------------------------------- boot

    async def start(self) -> None:
        """Boot (or join) the process's runtime, then warm it. Sets ``ready``; records a boot error."""
        started = time.perf_counter()
        try:
            await self._apply_test_hooks()
            await asyncio.to_thread(prepare_environment, self.settings, self.plan)
            await asyncio.to_thread(import_runtime)
            acquire_runtime(self.settings, self.plan)
            self._acquired = True
            from pipelex_server.engine.storage import PROVIDER

            PROVIDER.default = self.store
            for warning in self.plan.warnings:
                logger.warning(warning)
            if self.settings.warm_up:
                await warm_up(plan=self.plan, store=self.store, validate=self.validate)
                self._verdicts.clear()
            # The runtime and the provider SDKs leave ~a million long-lived objects behind; moving them out of the
            # collector's reach keeps each full collection from walking them again under load.
            gc.collect()
            gc.freeze()
            self.boot_seconds = time.perf_counter() - started
            logger.info("runtime ready in %.2fs (live backends: %s)", self.boot_seconds, ", ".join(self.plan.enabled))
            self.readiness.succeeded()
        except BaseException as exc:
            self.readiness.failed(exc)
            logger.exception("the pipelex runtime failed to boot; requests that need it answer 503 server.not_ready")
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _apply_test_hooks(self) -> None:
        """PIPELEX_SERVER_TEST_BOOT_DELAY_SECONDS / _FAILURE: widen the boot window, or fail the boot (tests only)."""
        delay = self.settings.pipelex_server_test_boot_delay_seconds
        if delay:
            logger.warning("test hook: the runtime boot starts in %.1fs (PIPELEX_SERVER_TEST_BOOT_DELAY_SECONDS)", delay)
            await asyncio.sleep(delay)
        failure = self.settings.pipelex_server_test_boot_failure
        if failure:
            raise RuntimeError(failure)

    def stop(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        release_runtime()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the runtime is ready: at most ``timeout`` seconds (default READY_WAIT_SECONDS; ``math.inf``
        waits as long as the boot takes). Raises 503 ``server.not_ready`` with Retry-After when it is not ready by
        then, and at once when the boot failed."""
        await self.readiness.wait(self.settings.ready_wait_seconds if timeout is None else timeout)

    # ---------------------------------------------------------------- runs

    def refuse_live_if_unconfigured(self) -> None:
        """503 ``inference.not_configured`` for a live run this process cannot execute. Safe before the boot: until
        the runtime is up, the inference plan alone decides."""
        if self.plan.is_live and not self._dry_run_forced():
            return
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

    def _dry_run_forced(self) -> bool:
        """The runtime's own word (a keyless boot runs every live request DRY); asked only once this app holds it."""
        if not self._acquired:
            return False
        from pipelex import runtime_hub

        return runtime_hub.is_dry_run_forced()

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
        if self._verdicts.enabled:
            self._verdicts.put(key, verdict, verdict_bytes(verdict))
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
