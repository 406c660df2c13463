"""The content-addressed blob store (`pipelex_server.blobs.BlobStore`) and the upload signer, on real backends: a
directory under tmp_path and a real S3 server (weed mini)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipelex_server.blob_signing import SIGNED_TARGET_REQUIREMENT, UploadSigner
from pipelex_server.blobs import BlobCorrupted, BlobStore, is_sha256, sha256_of
from pipelex_server.errors import ApiProblem
from pipelex_server.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from pipelex_server.storage.keys import blob_key
from tests.support.s3server import S3Server

ALICE, BOB = "alice", "bob"


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """An empty store per test: a fresh directory, or a fresh bucket on the session's S3 server."""
    if request.param == "local":
        backend: ObjectStore = LocalObjectStore(tmp_path / "storage")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = f"blobs-{secrets.token_hex(6)}"
        server.create_bucket(bucket)
        backend = S3ObjectStore(
            bucket=bucket,
            endpoint_url=server.endpoint_url,
            region=server.region,
            access_key=server.access_key,
            secret_key=server.secret_key,
        )
    await backend.check()
    try:
        yield backend
    finally:
        await backend.close()


async def test_a_blob_is_stored_under_its_hash_in_the_callers_scope(store: ObjectStore) -> None:
    blobs = BlobStore(store)
    data = b"domain = 'hello'\n"
    sha256 = await blobs.put(ALICE, data)

    assert sha256 == hashlib.sha256(data).hexdigest() and is_sha256(sha256)
    assert (await store.get(f"{ALICE}/blobs/{sha256[:2]}/{sha256}")).data == data
    assert await blobs.get(ALICE, sha256) == data
    assert await blobs.get(BOB, sha256) is None  # another caller's scope holds nothing of alice's
    assert await store.list_keys(f"{BOB}/blobs") == []


async def test_putting_a_held_blob_again_writes_nothing(store: ObjectStore) -> None:
    blobs = BlobStore(store)
    data = b"same bytes"
    sha256 = await blobs.put(ALICE, data)
    # the object is replaced out of band by bytes of the same size: a second put must leave it alone
    await store.put(blob_key(ALICE, sha256), b"SAME BYTES", content_type="application/octet-stream")
    assert await blobs.put(ALICE, data) == sha256
    assert (await store.get(blob_key(ALICE, sha256))).data == b"SAME BYTES"


async def test_missing_lists_absent_hashes_and_hashes_held_at_another_size(store: ObjectStore) -> None:
    blobs = BlobStore(store)
    held = await blobs.put(ALICE, b"held")
    absent = sha256_of(b"absent")
    assert await blobs.missing(ALICE, {held: 4, absent: 6}) == [absent]
    assert await blobs.missing(ALICE, {held: 5}) == [held]  # a hash held at another size is not held
    assert await blobs.missing(BOB, {held: 4}) == [held]
    assert await blobs.missing(ALICE, {}) == []


async def test_put_many_and_get_many(store: ObjectStore) -> None:
    blobs = BlobStore(store)
    contents = {"METHODS.toml": b"[package]\n", "a/one.mthds": b"one", "b/same.mthds": b"one", "empty.txt": b""}
    hashes = await blobs.put_many(ALICE, contents)
    assert hashes == {path: sha256_of(data) for path, data in contents.items()}
    assert hashes["a/one.mthds"] == hashes["b/same.mthds"]  # one blob for equal bytes
    assert len(await store.list_keys(f"{ALICE}/blobs")) == 3

    absent = sha256_of(b"never stored")
    found = await blobs.get_many(ALICE, [*hashes.values(), absent])
    assert found == {**{sha256: contents[path] for path, sha256 in hashes.items()}, absent: None}


async def test_a_damaged_blob_is_refused_on_read(store: ObjectStore) -> None:
    blobs = BlobStore(store)
    sha256 = await blobs.put(ALICE, b"original")
    await store.put(blob_key(ALICE, sha256), b"tampered", content_type="application/octet-stream")
    with pytest.raises(BlobCorrupted, match=sha256):
        await blobs.get(ALICE, sha256)


# ---------------------------------------------------------------- the upload signer (no storage)

SHA = sha256_of(b"payload")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_signed_target_grants_exactly_what_it_names() -> None:
    signer = UploadSigner(key=b"k" * 32, ttl_seconds=60, clock=Clock(1_000_000))
    query = signer.query(scope=ALICE, sha256=SHA, size=7)
    assert query["expires"] == "1000060"
    grant = signer.grant(sha256=SHA, **query)
    assert (grant.scope, grant.sha256, grant.size) == (ALICE, SHA, 7)

    tampered = [
        {**query, "scope": BOB},
        {**query, "size": "8"},
        {**query, "expires": "1000061"},
        {**query, "signature": query["signature"][:-1] + ("0" if query["signature"][-1] != "0" else "1")},
        {**query, "signature": "é" * 64},
        {**query, "expires": "1e9"},
        {**query, "scope": "../alice"},
        {**query, "signature": None},
    ]
    for forged in tampered:
        with pytest.raises(ApiProblem) as refused:
            signer.grant(sha256=SHA, **forged)
        assert refused.value.status == 403 and refused.value.code == "auth.forbidden", forged
        assert refused.value.members["params"] == {"requirement": SIGNED_TARGET_REQUIREMENT}
    with pytest.raises(ApiProblem):
        signer.grant(sha256=sha256_of(b"other"), **query)


def test_a_target_expires_and_another_key_does_not_verify() -> None:
    clock = Clock(1_000_000)
    signer = UploadSigner(key=b"k" * 32, ttl_seconds=60, clock=clock)
    query = signer.query(scope=ALICE, sha256=SHA, size=7)
    clock.now += 60
    signer.grant(sha256=SHA, **query)  # valid through its last second
    clock.now += 1
    with pytest.raises(ApiProblem, match="expired"):
        signer.grant(sha256=SHA, **query)

    other_process = UploadSigner(key=None, ttl_seconds=60, clock=Clock(1_000_000))
    with pytest.raises(ApiProblem, match="BLOB_UPLOAD_SIGNING_KEY") as refused:
        other_process.grant(sha256=SHA, **UploadSigner(key=None, ttl_seconds=60).query(scope=ALICE, sha256=SHA, size=7))
    assert refused.value.status == 403
    same_key = UploadSigner(key=b"k" * 32, ttl_seconds=60, clock=Clock(1_000_000))
    assert same_key.grant(sha256=SHA, **signer.query(scope=ALICE, sha256=SHA, size=7)).size == 7
