"""Running a pipeline on the booted runtime: the whole run (progress, checkpoints, usage) or only its setup check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelex_server.engine.library_cache import CapturingPipeRun, LibraryCache
from pipelex_server.engine.method_tree import written_tree
from pipelex_server.engine.method_tree_files import MethodTreeFiles
from pipelex_server.engine.types import CheckedSetup, Checkpoints, ProgressSink, RunOutcome
from pipelex_server.fetch import Fetcher
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectStore

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class _Source:
    """Where the runtime loads a call's method from, beyond ``mthds_contents``: a written tree (the caller's library
    directory and its dependencies' ``methods_dirs``), or the files sent beside inline bundles (``submitted_files``)."""

    tree_dir: Path | None = None
    methods_dirs: list[Path] | None = None
    submitted_files: dict[str, bytes] | None = None


async def _tree_source(stack: contextlib.AsyncExitStack, tree: MethodTreeFiles | None, arguments: dict[str, Any]) -> _Source:
    """Write a method tree for the call (removed when ``stack`` closes) and point ``arguments`` at its entry pipe.
    A "tree" beside ``mthds_contents`` is the files `resources` sent with those bundles: the runtime's submitted files."""
    if tree is None:
        return _Source()
    if arguments["mthds_contents"]:
        return _Source(submitted_files=dict(tree.contents))
    written = await stack.enter_async_context(written_tree(tree, pipe_code=arguments["pipe_code"]))
    arguments["pipe_code"], arguments["mthds_contents"] = written.pipe_code, None
    return _Source(tree_dir=written.directory, methods_dirs=written.methods_dirs)


@contextlib.asynccontextmanager
async def _cached_library(cache: LibraryCache, arguments: dict[str, Any], tree: MethodTreeFiles | None) -> Any:
    """The call's cache key and the id of a library loaded from the cache (None on a miss or an uncacheable call). On a
    hit, ``arguments`` run the cached entry pipe from that library instead of loading ``mthds_contents``; at the end of
    the block the library goes back to the cache: kept for the next run when the call succeeded, torn down otherwise."""
    plain = not any(arguments[name] for name in ("output_name", "output_multiplicity", "dynamic_output_concept_ref"))
    key = cache.call_key(mthds_contents=arguments["mthds_contents"], pipe_code=arguments["pipe_code"], plain=plain, tree=tree)
    entry = cache.get(key)
    if entry is None:
        yield key, None
        return
    assert key is not None  # an entry was found under it
    library_id: str | None = None
    try:
        library_id = await cache.open(key, entry)
    except Exception:  # never expected: the crate loaded once already; the call loads the method from its text instead
        logger.warning("a cached method failed to load from its crate; loading it from its text", exc_info=True)
    if library_id is None:
        yield key, None
        return
    arguments["pipe_code"], arguments["mthds_contents"] = entry.entry_ref, None
    reusable = False
    try:
        yield key, library_id
        reusable = True
    except _SetupChecked:  # a setup check that passed (the check's way of stopping before the run)
        reusable = True
        raise
    except Exception as exc:
        reusable = isinstance(exc.__cause__, _SetupChecked) or isinstance(exc.__context__, _SetupChecked)
        raise
    finally:
        cache.release(library_id, reusable=reusable)


class _SetupChecked(Exception):
    """Raised by the setup-only pipe run once the job is built: the bundle and inputs are valid. Carries the
    fingerprint of the crate the job was built from (the runtime's run metadata)."""

    def __init__(self, crate_fingerprint: str | None) -> None:
        super().__init__("setup checked")
        self.crate_fingerprint = crate_fingerprint


class _SetupOnlyPipeRun:
    """A pipe run that stops right after the runtime built the job (bundle loaded, pipe resolved, inputs shaped)."""

    async def run(self, pipe_job: Any, **_kwargs: Any) -> Any:
        # the entry pipe's own presence check (what the run does first): a missing input fails here
        await pipe_job.pipe.validate_before_run(
            job_metadata=pipe_job.job_metadata,
            working_memory=pipe_job.working_memory,
            pipe_run_params=pipe_job.pipe_run_params,
        )
        run_metadata = getattr(pipe_job.job_metadata, "run_metadata", None)
        raise _SetupChecked(getattr(run_metadata, "crate_fingerprint", None))


class Execution:
    """Runs pipelines for one app: its library directories, its object store and its fetcher."""

    def __init__(self, settings: Settings, *, store: ObjectStore, fetcher: Fetcher) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.libraries = LibraryCache(
            max_entries=settings.library_cache_size, max_mib=settings.library_cache_max_mib, pool_size=settings.library_pool_size
        )

    def _runner(
        self,
        *,
        dry_run: bool,
        scope: str,
        storage_scope: str,
        has_bundle: bool,
        pipe_run: Any = None,
        source: _Source | None = None,
        library_id: str | None = None,
    ) -> Any:
        from pipelex.config import get_config
        from pipelex.pipeline.runner import PipelexMTHDSProtocol
        from pipelex.system.pipe_run_mode import PipeRunMode

        # An inline bundle is self-contained; only a bare pipe_code reaches the server's own library. A method tree is
        # the caller's one library directory: a refusal while loading it is the caller's invalid method.
        source = source or _Source()
        tree_dir = source.tree_dir
        if tree_dir is not None:
            library_dirs = [str(tree_dir)]
        else:
            library_dirs = [] if has_bundle else [str(path) for path in self.settings.library_dirs]
        execution_config = get_config().interpreter.pipeline_execution.with_execution_overrides(generate_graph=False)
        return PipelexMTHDSProtocol(
            pipe_run_mode=PipeRunMode.DRY if dry_run else PipeRunMode.LIVE,
            library_dirs=library_dirs,
            library_dirs_are_callers=tree_dir is not None,
            user_id=scope,
            storage_scope=storage_scope,
            read_scope=scope,
            execution_config=execution_config,
            pipe_run=pipe_run,
            methods_dirs=source.methods_dirs,
            submitted_files=source.submitted_files,
            library_id=library_id,
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
        tree: MethodTreeFiles | None = None,
    ) -> RunOutcome:
        """Run one pipeline to its end (see ``Engine.execute``). Raises ``ApiProblem`` for every failure."""
        from pipelex import runtime_hub
        from pipelex.interpreter_hub import scoped_pipe_router
        from pipelex.pipe_run.pipe_router import PipeRouter
        from pipelex.pipe_run.pipe_run import PipeRun

        from pipelex_server.engine.events import ProgressObserver, RunEventLog
        from pipelex_server.engine.problems import problem_from_exception
        from pipelex_server.engine.results import shape_outcome
        from pipelex_server.engine.storage import InputResolution, bound

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
        event_log = RunEventLog(progress)
        resolution = InputResolution(store=self.store, fetcher=self.fetcher, storage_scope=storage_scope)
        try:
            async with contextlib.AsyncExitStack() as stack:
                key, library_id = await stack.enter_async_context(_cached_library(self.libraries, arguments, tree))
                if key is not None and library_id is None:  # a miss: keep what this load builds
                    pipe_run = CapturingPipeRun(self.libraries, key, inner=pipe_run)
                source = await _tree_source(stack, None if library_id else tree, arguments)  # a hit writes no tree
                runner = self._runner(
                    dry_run=dry_run,
                    scope=scope,
                    storage_scope=storage_scope,
                    has_bundle=bool(mthds_contents) or library_id is not None,
                    pipe_run=pipe_run,
                    source=source,
                    library_id=library_id,
                )
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
        tree: MethodTreeFiles | None = None,
    ) -> CheckedSetup:
        """The run's setup alone (see ``Engine.check``): its URL rewrites and the crate's fingerprint."""
        from pipelex_server.engine.problems import problem_from_exception
        from pipelex_server.engine.storage import InputResolution, bound

        arguments = _call_arguments(
            pipe_code, mthds_contents, inputs, output_name, output_multiplicity, dynamic_output_concept_ref, request_id
        )
        resolution = InputResolution(store=self.store, fetcher=self.fetcher, storage_scope=storage_scope)
        try:
            async with contextlib.AsyncExitStack() as stack:
                key, library_id = await stack.enter_async_context(_cached_library(self.libraries, arguments, tree))
                setup_only: Any = _SetupOnlyPipeRun()
                if key is not None and library_id is None:  # a miss: keep what this load builds
                    setup_only = CapturingPipeRun(self.libraries, key, inner=setup_only)
                source = await _tree_source(stack, None if library_id else tree, arguments)  # a hit writes no tree
                runner = self._runner(
                    dry_run=dry_run,
                    scope=scope,
                    storage_scope=storage_scope,
                    has_bundle=bool(mthds_contents) or library_id is not None,
                    pipe_run=setup_only,
                    source=source,
                    library_id=library_id,
                )
                with bound(self.store, resolution):
                    await runner.execute(**arguments)
        except _SetupChecked as checked:
            return CheckedSetup(resolution.rewrites, checked.crate_fingerprint)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for checked in (exc.__cause__, exc.__context__):
                if isinstance(checked, _SetupChecked):
                    return CheckedSetup(resolution.rewrites, checked.crate_fingerprint)
            raise problem_from_exception(exc, request_id=request_id) from exc
        raise RuntimeError("the setup check ran the pipeline")  # pragma: no cover - _SetupOnlyPipeRun never returns
