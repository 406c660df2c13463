"""A run's data in the object store: its offloaded output, read back; everything under its prefix, deleted with it."""

from __future__ import annotations

import json
import logging
from typing import Any

from pipelex_server.errors import ApiProblem
from pipelex_server.storage import ObjectNotFound, ObjectStore, StorageUnavailable
from pipelex_server.storage.keys import output_key, run_prefix

logger = logging.getLogger(__name__)


async def output_bytes(store: ObjectStore, row: dict[str, Any]) -> bytes:
    """A completed run's output as JSON bytes, from the run row or from object storage."""
    if row["output"] is not None or not row["output_url"]:
        return json.dumps(row["output"], separators=(",", ":"), ensure_ascii=False).encode()
    try:
        stored = await store.get(output_key(row["caller_id"], row["public_id"]))
    except ObjectNotFound as exc:
        raise ApiProblem(status=500, code="run.lost", detail="The run's stored output is missing.") from exc
    except StorageUnavailable as exc:
        raise ApiProblem(status=503, code="storage.unavailable", detail="The server's object storage is unavailable.") from exc
    return stored.data


async def delete_stored(store: ObjectStore, caller_id: str, public_id: str) -> None:
    """A run's stored data (fetched and relocated inputs, offloaded output) goes with it."""
    try:
        await store.delete_prefix(run_prefix(caller_id, public_id))
    except StorageUnavailable:
        logger.warning("could not delete the stored data of run %s of %s", public_id, caller_id, exc_info=True)
