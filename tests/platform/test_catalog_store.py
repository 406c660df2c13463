"""The catalog's rows on SQLite and PostgreSQL: the migration, the draft token's compare-and-set, one version out of
concurrent publishes, the single deletion claim, caller scoping, and the examples' revision guards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelex_server.store.catalog import CatalogRepository
from pipelex_server.store.common import utcnow
from pipelex_server.store.db import make_engine, migrate
from pipelex_server.store.examples import ExampleRepository

TREE = {"hello.mthds": {"sha256": "0" * 64, "size": 3}}


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


def method_row(caller: str = "alice") -> dict[str, Any]:
    now = utcnow()
    return {
        "id": f"mt_{uuid.uuid4().hex}",
        "caller_id": caller,
        "name": "m",
        "description": None,
        "input_data": None,
        "draft": TREE,
        "draft_digest": "sha256:" + "1" * 64,
        "created_by": caller,
        "created_at": now,
        "updated_at": now,
        "latest_version": None,
        "deletion_state": None,
        "deletion_job_id": None,
    }


def version_row(number: int) -> dict[str, Any]:
    return {
        "version": number,
        "tree": TREE,
        "tree_digest": "sha256:" + "1" * 64,
        "description": None,
        "runner_version": None,
        "crate_fingerprint": None,
        "published_at": utcnow(),
        "published_by": "alice",
    }


async def test_concurrent_publishes_write_one_version_and_a_stale_token_writes_nothing(database: AsyncEngine) -> None:
    repository = CatalogRepository(database)
    row = method_row()
    await repository.insert_method(row)
    stored = await repository.get_method("alice", row["id"])
    assert stored is not None and stored["updated_at"] == row["updated_at"]  # a token reads back exactly
    assert await repository.get_method("bob", row["id"]) is None

    outcomes = await asyncio.gather(
        *(repository.publish(row["id"], version_row(1), token=row["updated_at"], previous=None) for _ in range(4))
    )
    assert sorted(outcomes) == [False, False, False, True]
    versions, _ = await repository.list_versions(row["id"], limit=10, before=None)
    assert [version["version"] for version in versions] == [1]
    assert not await repository.publish(row["id"], version_row(2), token=row["updated_at"] - timedelta(seconds=1), previous=1)

    written = await repository.write_draft(row["id"], {"name": "m"}, expected=row["updated_at"])
    assert written is not None and written["updated_at"] > row["updated_at"]
    assert await repository.write_draft(row["id"], {"name": "late"}, expected=row["updated_at"]) is None
    assert not await repository.publish(row["id"], version_row(2), token=row["updated_at"], previous=1)


async def test_one_deletion_claim_wins_and_erasure_removes_examples_and_versions(database: AsyncEngine) -> None:
    repository, examples = CatalogRepository(database), ExampleRepository(database)
    row = method_row()
    await repository.insert_method(row)
    await repository.publish(row["id"], version_row(1), token=row["updated_at"], previous=None)
    now = utcnow()
    example = {
        "id": f"ex_{uuid.uuid4().hex}",
        "method_id": row["id"],
        "name": "e",
        "inputs": {"a": 1},
        "input_revision": 1,
        "latest_run_id": None,
        "kept_by_assistant": True,
        "created_by": "alice",
        "created_at": now,
        "updated_at": now,
    }
    await examples.insert(example)
    assert not await examples.keep_for_assistant(row["id"], example["id"], inputs={"a": 2}, revision=2)
    assert await examples.change_inputs(row["id"], example["id"], name=None, inputs={"a": 3}, revision=1)
    assert not await examples.keep_for_assistant(row["id"], example["id"], inputs={"a": 4}, revision=2)  # a person's now
    assert not await examples.update(row["id"], example["id"], {"latest_run_id": "r"}, revision=1)
    assert (await examples.get(row["id"], example["id"]) or {})["input_revision"] == 2

    assert not await repository.claim_deletion("bob", row["id"], "job-b")
    claims = await asyncio.gather(*(repository.claim_deletion("alice", row["id"], f"job-{index}") for index in range(3)))
    assert sorted(claims) == [False, False, True]
    assert row["id"] in [pending["id"] for pending in await repository.pending_deletions()]
    await repository.set_deletion_state(row["id"], "failed")
    assert row["id"] not in [pending["id"] for pending in await repository.pending_deletions()]
    assert await repository.claim_deletion("alice", row["id"], "job-retry")  # a failed erasure is claimed again
    assert not await repository.claim_deletion("alice", row["id"], "job-again")
    await repository.erase(row["id"])
    assert await repository.get_method("alice", row["id"]) is None
    assert await examples.get(row["id"], example["id"]) is None
    assert await repository.get_version(row["id"], 1) is None
