"""Object storage for the server's blobs: a local directory or an S3 bucket, behind one interface."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pipelex_server.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
    StoredObject,
    validate_key,
)
from pipelex_server.storage.local import LocalObjectStore
from pipelex_server.storage.s3 import S3ObjectStore

__all__ = [
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "StorageUnavailable",
    "StoredObject",
    "make_object_store",
    "validate_key",
]

BACKENDS = ("local", "s3")
LOCAL_SUBDIR = "storage"


def make_object_store(
    *,
    backend: str,
    data_dir: Path,
    s3_bucket: str | None,
    s3_endpoint_url: str | None,
    s3_region: str | None,
    environ: Mapping[str, str] = os.environ,
) -> ObjectStore:
    """The store for STORAGE_BACKEND: `local` keeps objects under `data_dir/storage`; `s3` needs S3_BUCKET and the
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and optional AWS_SESSION_TOKEN) of `environ`. ValueError names what is missing."""
    name = (backend or "").strip().lower()
    if name == "local":
        return LocalObjectStore(Path(data_dir) / LOCAL_SUBDIR)
    if name == "s3":
        access_key = environ.get("AWS_ACCESS_KEY_ID", "").strip()
        secret_key = environ.get("AWS_SECRET_ACCESS_KEY", "").strip()
        missing = [
            variable
            for variable, value in (("S3_BUCKET", s3_bucket), ("AWS_ACCESS_KEY_ID", access_key), ("AWS_SECRET_ACCESS_KEY", secret_key))
            if not value
        ]
        if missing:
            raise ValueError(f"STORAGE_BACKEND=s3 needs {', '.join(missing)}")
        assert s3_bucket is not None
        return S3ObjectStore(
            bucket=s3_bucket,
            endpoint_url=s3_endpoint_url or None,
            region=s3_region or None,
            access_key=access_key,
            secret_key=secret_key,
            session_token=environ.get("AWS_SESSION_TOKEN", "").strip() or None,
        )
    raise ValueError(f"unknown storage backend {backend!r}: expected one of {', '.join(BACKENDS)}")
