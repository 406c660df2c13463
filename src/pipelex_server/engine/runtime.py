"""The one door to the pipelex runtime for an app: its handle on the booted runtime (execute, check, validate, models).

Booting and sharing the process's runtime is in ``boot``, warming it in ``warmup``, readiness in ``readiness``,
running pipelines in ``execution``, validating bundles in ``validation``; the value types are in ``types``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from pipelex_server.blobs import BlobStore
from pipelex_server.boot_gc import collector_off, freeze_boot_objects
from pipelex_server.engine.boot import acquire_runtime, import_runtime, prepare_environment, release_runtime
from pipelex_server.engine.check_verdicts import CheckVerdicts
from pipelex_server.engine.connection_probe import install_connection_probe
from pipelex_server.engine.execution import Execution
from pipelex_server.engine.home import plan_inference
from pipelex_server.engine.method_sources import SourceLimits, read_bundle_method
from pipelex_server.engine.method_tree_files import MethodTreeFiles, TreeLimits, read_method_tree
from pipelex_server.engine.readiness import Readiness
from pipelex_server.engine.sdk_params import install_plain_params
from pipelex_server.engine.types import Checkpoints, ProgressSink, RunOutcome
from pipelex_server.engine.validation import Validator
from pipelex_server.engine.warmup import warm_up
from pipelex_server.errors import ApiProblem
from pipelex_server.fetch import Fetcher
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectStore

__all__ = ["Checkpoints", "Engine", "ProgressSink", "RunOutcome"]

logger = logging.getLogger(__name__)


class Engine:
    """Per-app handle on the process's runtime."""

    def __init__(self, settings: Settings, *, store: ObjectStore, fetcher: Fetcher) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.plan = plan_inference(os.environ, openai_base_url=settings.openai_base_url)
        self.readiness = Readiness()
        self.boot_seconds: float | None = None
        self.execution = Execution(settings, store=store, fetcher=fetcher)
        self.verdicts = CheckVerdicts(self.execution.libraries)
        self.validator = Validator(settings)
        self.blobs = BlobStore(store)
        self.tree_limits = TreeLimits(
            max_files=settings.max_method_tree_files,
            max_file_bytes=settings.max_method_tree_file_bytes,
            max_total_bytes=settings.max_method_tree_total_bytes,
        )
        self.source_limits = SourceLimits.of(settings)
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
        with collector_off():  # the boot allocates a million long-lived objects and little garbage (boot_gc.py)
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
                    self.validator.verdicts.clear()
                # the provider SDK's hot path, once the warm-up imported it (a module not imported is left alone)
                install_connection_probe()
                install_plain_params()
                freeze_boot_objects()
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
        self.execution.libraries.pool.clear()  # the libraries kept for later runs go with this app
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
        """Run one pipeline to its end. Raises ``ApiProblem`` for every failure (already translated). A method
        ``tree`` is the run's source in place of ``mthds_contents`` (see ``engine/method_tree.py``).

        ``scope`` is the caller's namespace (what the run may read); ``storage_scope`` the run's own prefix under it,
        where fetched and relocated inputs are stored. With ``checkpoints``, each finished step of the top-level
        pipeline is saved, and steps saved by an earlier attempt of the same run are not executed again."""
        if not dry_run:
            self.refuse_live_if_unconfigured()
        return await self.execution.execute(
            pipe_code=pipe_code,
            mthds_contents=mthds_contents,
            inputs=inputs,
            output_name=output_name,
            output_multiplicity=output_multiplicity,
            dynamic_output_concept_ref=dynamic_output_concept_ref,
            dry_run=dry_run,
            scope=scope,
            storage_scope=storage_scope,
            request_id=request_id,
            progress=progress,
            checkpoints=checkpoints,
            tree=tree,
        )

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
    ) -> dict[str, str]:
        """Everything a run does before its first pipe: parse and load the bundle, resolve the pipe, shape the
        inputs (remote and ``data:`` inputs are fetched and stored). Raises the same problem the run would (422 for
        a bad bundle or input); runs nothing. Returns the URL rewrites (original URL -> storage URI) and the
        fingerprint of the crate the method loaded into."""
        if not dry_run:
            self.refuse_live_if_unconfigured()
        plain = not (output_name or output_multiplicity or dynamic_output_concept_ref)
        verdict = self.verdicts.key(
            pipe_code=pipe_code, mthds_contents=mthds_contents, inputs=inputs, plain=plain, dry_run=dry_run, scope=scope, tree=tree
        )
        remembered = self.verdicts.passed(verdict)
        if remembered is not None:
            return remembered  # this very check passed before, and it fetched and stored nothing (engine/check_verdicts.py)
        checked = await self.execution.check(
            pipe_code=pipe_code,
            mthds_contents=mthds_contents,
            inputs=inputs,
            output_name=output_name,
            output_multiplicity=output_multiplicity,
            dynamic_output_concept_ref=dynamic_output_concept_ref,
            dry_run=dry_run,
            scope=scope,
            storage_scope=storage_scope,
            request_id=request_id,
            tree=tree,
        )
        if not checked.rewrites:
            self.verdicts.remember(verdict, checked)
        return checked

    async def crate_fingerprint(self, tree: MethodTreeFiles) -> str | None:
        """The fingerprint of the crate a method tree resolves to, or None (see ``engine/codegen.crate_fingerprint``)."""
        from pipelex_server.engine.codegen import crate_fingerprint

        return await crate_fingerprint(tree)

    async def validate(
        self, *, mthds_contents: list[str] | None, pipe_code: str | None, tree: MethodTreeFiles | None = None
    ) -> dict[str, Any]:
        """Static validation plus a dry run of every pipe; a verdict for any text (cached by content hash)."""
        return await self.validator.validate(mthds_contents=mthds_contents, pipe_code=pipe_code, tree=tree)

    # ---------------------------------------------------------------- method trees

    async def read_method_tree(self, files_document: str, *, scope: str) -> MethodTreeFiles:
        """A request's `files` map (its JSON text) read into a method tree, hash entries from the caller's blobs;
        ``ApiProblem`` (4xx) for every refusal (see ``engine/method_tree_files.py``)."""
        return await read_method_tree(files_document, blobs=self.blobs, scope=scope, limits=self.tree_limits)

    async def read_bundle(self, bundle_b64: str, *, scope: str) -> MethodTreeFiles:
        """A request's `bundle_b64` archive read into a method tree (its shipped packages as dependency trees);
        ``ApiProblem`` (4xx) for every refusal (see ``engine/method_bundle.py``)."""
        return await read_bundle_method(bundle_b64, limits=self.source_limits, tree_limits=self.tree_limits, blobs=self.blobs, scope=scope)

    async def stored_method_tree(
        self, hashes: dict[str, str], *, scope: str, dependencies: dict[str, dict[str, str]] | None = None
    ) -> MethodTreeFiles:
        """A tree accepted earlier, read back from the caller's blobs (tree path -> SHA-256), with its dependency trees
        (address -> hashes), as a worker on another host reads it. 422 ``request.blobs_missing`` when a blob is gone."""
        tree = await self._stored_tree(hashes, scope=scope)
        for address, dependency in (dependencies or {}).items():
            tree.dependencies[address] = await self._stored_tree(dependency, scope=scope)
        return tree

    async def _stored_tree(self, hashes: dict[str, str], *, scope: str) -> MethodTreeFiles:
        found = await self.blobs.get_many(scope, hashes.values())
        missing = sorted(sha256 for sha256, data in found.items() if data is None)
        if missing:
            raise ApiProblem(
                status=422,
                code="request.blobs_missing",
                detail="The run's method tree is no longer held in storage: " + ", ".join(missing) + ".",
                params={"missing_blobs": missing},
            )
        return MethodTreeFiles.of({path: found[sha256] or b"" for path, sha256 in hashes.items()})

    async def store_method_tree(self, tree: MethodTreeFiles, *, scope: str) -> None:
        """Keep a tree's files content-addressed under the caller's scope (a blob already held is not written again)."""
        await self.blobs.put_many(scope, tree.contents)
        for dependency in tree.dependencies.values():
            await self.blobs.put_many(scope, dependency.contents)

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
