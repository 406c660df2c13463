"""The files services built from the settings (composition.py calls ``build_files``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelex_server.errors import ConfigurationError
from pipelex_server.files.links import LinkSigner
from pipelex_server.files.run_files import RunFiles
from pipelex_server.files.run_history import RunHistory
from pipelex_server.files.service import FileService
from pipelex_server.settings import BLOB_UPLOAD_KEY_MIN_CHARS, Settings
from pipelex_server.storage import ObjectStore
from pipelex_server.store.files import FileRepository
from pipelex_server.store.run_history import RunHistoryRepository
from pipelex_server.store.runs import RunRepository
from pipelex_server.uploads import UploadService

if TYPE_CHECKING:  # the store imports it first (store/async_engine.py: the engine without the ORM)
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)


@dataclass
class Files:
    """The platform's files (docs/files.md): records and links, a run's files, the run history."""

    service: FileService
    run_files: RunFiles
    history: RunHistory


def link_key(settings: Settings) -> bytes | None:
    """STORAGE_LINK_SIGNING_KEY, else BLOB_UPLOAD_SIGNING_KEY (links derive their own key from it), else None."""
    secret = settings.storage_link_signing_key or settings.blob_upload_signing_key
    if secret is None:
        return None
    value = secret.get_secret_value().strip()
    if len(value) < BLOB_UPLOAD_KEY_MIN_CHARS:
        raise ConfigurationError(f"STORAGE_LINK_SIGNING_KEY must be at least {BLOB_UPLOAD_KEY_MIN_CHARS} characters")
    return value.encode()


def build_files(settings: Settings, *, database: AsyncEngine, store: ObjectStore, uploads: UploadService) -> Files:
    key = link_key(settings)
    if key is None:
        logger.info(
            "STORAGE_LINK_SIGNING_KEY is unset: storage links and list cursors are signed with a key of this process, so "
            "they work only on this process and until it restarts (set the key when several processes serve the API)"
        )
    signer = LinkSigner(key=key, ttl_seconds=settings.storage_link_ttl_seconds)
    service = FileService(settings=settings, repository=FileRepository(database), uploads=uploads, store=store, signer=signer)
    runs = RunRepository(database)
    return Files(
        service=service,
        run_files=RunFiles(files=service, runs=runs),
        history=RunHistory(repository=RunHistoryRepository(database), runs=runs, cursors=service.cursors),
    )
