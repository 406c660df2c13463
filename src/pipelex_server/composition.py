"""Builds the server's services from the settings, in one place (the API's lifespan and the Temporal worker both use
it): the object store and fetcher, the migrated run store, the runtime, the run service with its execution mode
chosen once, and uploads."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import ssl
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from pipelex_server.blob_signing import UploadSigner
from pipelex_server.blob_uploads import BlobService
from pipelex_server.blobs import BlobStore
from pipelex_server.catalog.deletion import MethodEraser
from pipelex_server.catalog.examples import ExampleService
from pipelex_server.catalog.links import FileLinks
from pipelex_server.catalog.publish import Publisher
from pipelex_server.catalog.service import CatalogService
from pipelex_server.engine.runtime import Engine
from pipelex_server.errors import ConfigurationError
from pipelex_server.fetch import Fetcher
from pipelex_server.files.build import Files, build_files
from pipelex_server.key_service import ApiKeyService
from pipelex_server.methods.cache import MethodCache
from pipelex_server.methods.git import Git
from pipelex_server.methods.source import MethodSource
from pipelex_server.netguard import Resolver
from pipelex_server.observability.tracing import tracing_requested
from pipelex_server.observability.tracing_storage import traced_store
from pipelex_server.observability.usage import UsageService
from pipelex_server.runs.admission import Admission
from pipelex_server.runs.attempts import RunAttempts
from pipelex_server.runs.callbacks import CallbackDeliverer
from pipelex_server.runs.documents import stored_run_document
from pipelex_server.runs.events import RunEvents
from pipelex_server.runs.execution import RunExecution
from pipelex_server.runs.executor import Executor
from pipelex_server.runs.inprocess import InProcessExecutor
from pipelex_server.runs.lifecycle import RunLifecycle
from pipelex_server.runs.maintenance import RetentionPurge
from pipelex_server.runs.priority import AckPriority
from pipelex_server.runs.service import RunService
from pipelex_server.settings import Settings
from pipelex_server.storage import ObjectStore, StorageUnavailable, make_object_store
from pipelex_server.store.api_keys import ApiKeyRepository
from pipelex_server.store.catalog import CatalogRepository
from pipelex_server.store.checkpoints import CheckpointRepository
from pipelex_server.store.db import make_engine, migrate
from pipelex_server.store.deliveries import DeliveryRepository
from pipelex_server.store.examples import ExampleRepository
from pipelex_server.store.runs import RunRepository
from pipelex_server.store.uploads import UploadRepository
from pipelex_server.store.usage import UsageRepository
from pipelex_server.uploads import UploadService

if TYPE_CHECKING:  # the store imports it first (store/async_engine.py: the engine without the ORM)
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """What the routes (and the worker) use. ``close`` releases everything ``build_services`` opened."""

    settings: Settings
    engine: Engine
    runs: RunService
    uploads: UploadService
    store: ObjectStore
    fetcher: Fetcher
    database: AsyncEngine
    blobs: BlobService
    temporal: Any = None  # the Temporal client runs are submitted to, and a worker polls (Temporal mode)
    methods: MethodSource | None = None  # method_ref: git fetches and the commit cache
    catalog: Catalog | None = None  # the methods catalog (methods, versions, examples, erasure)
    api_keys: ApiKeyService | None = None  # AUTH_MODE=keys: the callers' API keys (docs/api-keys.md)
    files: Files | None = None  # the platform's files, storage links, runs' files and run history (docs/files.md)
    usage: UsageService | None = None  # GET /api/v1/usage, and the queued/running gauges of /metrics
    boot: asyncio.Task[None] | None = None

    def boot_in_background(self) -> None:
        """Boot the runtime without holding up the process (it answers 503 until ready)."""
        self.boot = asyncio.create_task(self.engine.start(), name="runtime-boot")

    async def close(self, *, grace_seconds: float) -> None:
        """Each step is bounded: a shutdown never hangs on one of them. A step past its bound is logged with the stacks
        of the tasks still pending (what it was waiting for), and the next steps run anyway."""
        if self.catalog is not None:
            await _bounded("the catalog's erasures", self.catalog.eraser.close())
        await _bounded("the run service", self.runs.close(grace_seconds=grace_seconds), grace_seconds + CLOSE_STEP_SECONDS * 3)
        await _bounded("the upload service", self.uploads.close())
        if self.boot is not None:
            if not self.boot.done():
                self.boot.cancel()
            with contextlib.suppress(BaseException):
                await _bounded("the runtime boot", self.boot)
        self.engine.stop()
        await _bounded("the database", self.database.dispose())
        await _bounded("the fetcher", self.fetcher.aclose())
        await _bounded("the object store", self.store.close())


CLOSE_STEP_SECONDS = 10.0


@dataclass
class Catalog:
    """The methods catalog's services (catalog/): methods and versions, publishing, erasure, examples."""

    methods: CatalogService
    publisher: Publisher
    eraser: MethodEraser
    examples: ExampleService


def build_catalog(*, database: AsyncEngine, engine: Engine, runs: RunService, files: Files) -> Catalog:
    """The catalog on ``database``; its file links are signed by the storage links' signer (STORAGE_LINK_TTL_SECONDS,
    STORAGE_LINK_SIGNING_KEY, else BLOB_UPLOAD_SIGNING_KEY, else a key of this process)."""
    methods = CatalogService(repository=CatalogRepository(database), engine=engine, links=FileLinks(files.service.signer))
    return Catalog(
        methods=methods,
        publisher=Publisher(methods),
        eraser=MethodEraser(repository=methods.repository, runs=runs),
        examples=ExampleService(repository=ExampleRepository(database), catalog=methods, runs=runs),
    )


async def _bounded(what: str, step: Awaitable[Any], seconds: float = CLOSE_STEP_SECONDS) -> None:
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task() and not task.done()]
        stacks = io.StringIO()
        for task in pending:
            task.print_stack(limit=8, file=stacks)
        logger.error("shutdown: closing %s took over %.0fs; going on without it. Pending tasks:\n%s", what, seconds, stacks.getvalue())


def make_store(settings: Settings) -> Any:
    """The object store the settings name (local directory under DATA_DIR, or S3-compatible)."""
    try:
        store = make_object_store(
            backend=settings.storage_backend.value,
            data_dir=settings.data_dir,
            s3_bucket=settings.s3_bucket,
            s3_endpoint_url=settings.s3_endpoint_url,
            s3_region=settings.s3_region,
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    return traced_store(store)  # storage spans when tracing is on (observability/tracing_storage.py)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The outbound clients' TLS context (the fetcher's, the callbacks'), the one their httpx clients made each
    (certifi's bundle; SSL_CERT_FILE/DIR ignored, as by their ``trust_env=False``): made once, as loading the bundle
    costs ~20 ms and ~0.7 MiB per context."""
    return httpx.create_ssl_context(trust_env=False)


async def checked_store(settings: Settings) -> Any:
    """The object store, checked (ConfigurationError when it cannot be used)."""
    store = make_store(settings)
    try:
        await store.check()
    except StorageUnavailable as exc:
        await store.close()
        raise ConfigurationError(f"the object storage ({settings.storage_backend.value}) cannot be used: {exc}") from exc
    return store


async def open_storage(settings: Settings) -> tuple[Any, Fetcher]:
    """The checked object store and the guarded fetcher (ConfigurationError when the storage cannot be used)."""
    store = await checked_store(settings)
    fetcher = Fetcher(
        allow_private=settings.fetch_allow_private_hosts,
        max_bytes=settings.fetch_max_bytes,
        timeout_seconds=settings.fetch_timeout_seconds,
        max_concurrency=settings.fetch_max_concurrency,
        max_request_bytes=settings.fetch_max_request_bytes,
        resolver=Resolver(timeout_seconds=settings.dns_timeout_seconds, max_concurrency=settings.dns_max_concurrency),
        ssl_context=tls_context(),
    )
    return store, fetcher


async def preflight(settings: Settings) -> None:
    """Fail fast, with a clear message, on object storage or Temporal that cannot be used (before the server binds)."""
    tracing_requested(os.environ)  # an OTEL_* exporter or protocol this server cannot serve stops here (docs/tracing.md)
    store = await checked_store(settings)
    await store.close()
    if settings.is_temporal:
        from pipelex_server.temporal.client import connect

        await connect(settings)


async def build_services(settings: Settings) -> Services:
    """Everything the API and the worker run on, from the settings. The runtime is built, not booted: the API boots
    it in the background (``Services.boot_in_background``), the worker before it takes work."""
    store, fetcher = await open_storage(settings)
    database = make_engine(settings.resolved_database_url)
    try:
        await migrate(database)
        temporal = None
        if settings.is_temporal:
            from pipelex_server.temporal.client import connect

            temporal = await connect(settings)
        engine = Engine(settings, store=store, fetcher=fetcher)
        runs = build_run_service(settings, database=database, engine=engine, store=store, temporal=temporal)
        uploads = UploadService(settings=settings, repository=UploadRepository(database), store=store)
        blobs = build_blob_service(settings, store=store)
        files = build_files(settings, database=database, store=store, uploads=uploads)
        runs.lifecycle.end_listeners.append(files.run_files.record_ended)  # a completed run's files recorded as it ends
    except BaseException:
        await database.dispose()
        await fetcher.aclose()
        await store.close()
        raise
    return Services(
        settings=settings,
        engine=engine,
        runs=runs,
        uploads=uploads,
        store=store,
        fetcher=fetcher,
        database=database,
        blobs=blobs,
        temporal=temporal,
        methods=build_method_source(settings),
        catalog=build_catalog(database=database, engine=engine, runs=runs, files=files),
        api_keys=ApiKeyService(settings=settings, repository=ApiKeyRepository(database)),
        files=files,
        usage=UsageService(UsageRepository(database)),
    )


def build_method_source(settings: Settings) -> MethodSource:
    """`method_ref`'s resolver: git under METHOD_FETCH_TIMEOUT_SECONDS, the commit cache and its bounds, the tree and
    request limits (the packages it ships are dependency trees)."""
    cache = MethodCache(
        settings.resolved_method_cache_dir,
        git=Git(),
        max_clones=settings.max_method_cache_clones,
        max_total_bytes=settings.max_method_cache_total_kib * 1024,
        max_age_seconds=settings.max_method_cache_age_hours * 3600,
    )
    return MethodSource(
        cache=cache,
        timeout_seconds=settings.method_fetch_timeout_seconds,
        max_files=settings.max_method_tree_files,
        max_file_bytes=settings.max_method_tree_file_bytes,
        max_total_bytes=settings.max_method_tree_total_bytes,
        max_dependencies=settings.max_method_dependencies,
        max_request_total_bytes=settings.max_method_request_total_kib * 1024,
    )


def build_blob_service(settings: Settings, *, store: ObjectStore) -> BlobService:
    """The blob routes' service: the caller's blobs in ``store``, upload targets signed with BLOB_UPLOAD_SIGNING_KEY (or a
    key of this process when it is unset)."""
    key = settings.blob_upload_signing_key.get_secret_value().encode() if settings.blob_upload_signing_key else None
    signer = UploadSigner(key=key, ttl_seconds=settings.blob_upload_url_ttl_seconds)
    return BlobService(settings=settings, blobs=BlobStore(store), signer=signer)


def build_run_service(settings: Settings, *, database: AsyncEngine, engine: Engine, store: ObjectStore, temporal: Any = None) -> RunService:
    """The run service and its rooms on ``database``. The execution mode is chosen here, once: in-process, or Temporal
    (runs submitted to ``temporal``, the client)."""
    repository, deliveries = RunRepository(database), DeliveryRepository(database)
    instance_id = uuid.uuid4().hex
    events = RunEvents(repository)
    deliverer = CallbackDeliverer(
        settings=settings,
        repository=deliveries,
        owner=instance_id,
        document_for=functools.partial(stored_run_document, repository, deliveries),
        ssl_context=tls_context(),
    )
    execution = RunExecution(settings=settings, engine=engine, store=store, events=events)
    lifecycle_for = functools.partial(
        RunLifecycle, repository=repository, events=events, instance_id=instance_id, lease_seconds=settings.lease_seconds
    )
    executor: Executor
    acks = AckPriority(settings.ack_priority_max_wait_seconds, settings.ack_priority_settle_ms / 1000)
    if settings.is_temporal:
        from pipelex_server.temporal.executor import TemporalExecutor, workflow_delivers_callbacks

        lifecycle = lifecycle_for(on_end=workflow_delivers_callbacks)
        executor = TemporalExecutor(settings=settings, client=temporal, lifecycle=lifecycle)
    else:
        lifecycle = lifecycle_for(on_end=deliverer.run_ended)
        executor = InProcessExecutor(
            settings=settings,
            repository=repository,
            events=events,
            lifecycle=lifecycle,
            execution=execution,
            deliverer=deliverer,
            engine=engine,
            acks=acks,
        )
    return RunService(
        settings=settings,
        repository=repository,
        deliveries=deliveries,
        store=store,
        events=events,
        lifecycle=lifecycle,
        admission=Admission(
            settings=settings,
            engine=engine,
            repository=repository,
            lifecycle=lifecycle,
            executor=executor,
            store=store,
            resolver=deliverer.resolver,
        ),
        executor=executor,
        retention=RetentionPurge(settings=settings, repository=repository, store=store),
        attempts=RunAttempts(
            settings=settings,
            repository=repository,
            deliveries=deliveries,
            checkpoints=CheckpointRepository(database),
            events=events,
            lifecycle=lifecycle,
            execution=execution,
            deliverer=deliverer,
        ),
        deliverer=deliverer,
        acks=acks,
    )
