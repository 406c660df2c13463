"""The object stores against real backends: a directory under tmp_path, and a real S3 server (weed mini)."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import string
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from pipelex_server.storage import (
    LocalObjectStore,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    StorageUnavailable,
    StoredObject,
    make_object_store,
    validate_key,
)
from pipelex_server.storage.local import CONTENT_TYPE_SUFFIX
from pipelex_server.storage.s3 import error_code
from pipelex_server.storage.sigv4 import EMPTY_SHA256, Credentials, canonical_query, payload_hash, sign, uri_encode
from tests.support.s3server import S3Server

MIB = 1024 * 1024


def s3_store(server: S3Server, *, bucket: str | None = None, secret_key: str | None = None) -> S3ObjectStore:
    return S3ObjectStore(
        bucket=bucket or server.bucket,
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key=server.access_key,
        secret_key=secret_key or server.secret_key,
    )


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """Each test gets an empty store: a fresh directory, or a fresh bucket on the session's S3 server."""
    if request.param == "local":
        backend: ObjectStore = LocalObjectStore(tmp_path / "storage")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = f"t-{secrets.token_hex(6)}"
        server.create_bucket(bucket)
        backend = s3_store(server, bucket=bucket)
    await backend.check()
    try:
        yield backend
    finally:
        await backend.close()


# -- both backends ---------------------------------------------------------------------------------------------------


async def test_put_get_round_trip_keeps_the_content_type(store: ObjectStore) -> None:
    await store.put("runs/r1/report.json", b'{"ok": true}', content_type="application/json")
    assert await store.get("runs/r1/report.json") == StoredObject(data=b'{"ok": true}', content_type="application/json")

    await store.put("runs/r1/report.json", b"replaced")
    assert await store.get("runs/r1/report.json") == StoredObject(data=b"replaced", content_type=None)

    await store.put("runs/r1/report.json", b"again", content_type="text/plain; charset=utf-8")
    assert await store.get("runs/r1/report.json") == StoredObject(data=b"again", content_type="text/plain; charset=utf-8")


async def test_binary_data_with_every_byte_value_round_trips(store: ObjectStore) -> None:
    data = bytes(range(256)) * 3 + bytes(reversed(range(256)))
    await store.put("bin/all-bytes", data, content_type="application/octet-stream")
    stored = await store.get("bin/all-bytes")
    assert stored.data == data
    assert await store.get_head("bin/all-bytes", 300) == data[:300]


async def test_get_head_reads_at_most_the_first_bytes(store: ObjectStore) -> None:
    await store.put("doc.pdf", b"%PDF-1.7 rest of the document")
    assert await store.get_head("doc.pdf", 5) == b"%PDF-"
    assert await store.get_head("doc.pdf", 1) == b"%"
    assert await store.get_head("doc.pdf", 29) == b"%PDF-1.7 rest of the document"
    assert await store.get_head("doc.pdf", 10_000) == b"%PDF-1.7 rest of the document"
    assert await store.get_head("doc.pdf", 0) == b""

    await store.put("empty", b"")
    assert await store.get_head("empty", 8) == b""
    assert (await store.get("empty")).data == b""


async def test_head_tells_size_and_content_type_without_the_bytes(store: ObjectStore) -> None:
    await store.put("a/image.png", b"\x89PNG" + b"\x00" * 1000, content_type="image/png")
    await store.put("a/untyped", b"xyz")
    await store.put("a/empty", b"")
    assert await store.head("a/image.png") == ObjectInfo(key="a/image.png", size=1004, content_type="image/png")
    assert await store.head("a/untyped") == ObjectInfo(key="a/untyped", size=3, content_type=None)
    assert await store.head("a/empty") == ObjectInfo(key="a/empty", size=0, content_type=None)


async def test_a_missing_key_is_object_not_found(store: ObjectStore) -> None:
    await store.put("x/y/z", b"1")
    for missing in ("nothing", "x/nothing", "x/y", "x/y/z/deeper"):
        for read in (store.get(missing), store.head(missing), store.get_head(missing, 4), store.get_head(missing, 0)):
            with pytest.raises(ObjectNotFound) as caught:
                await read
            assert isinstance(caught.value, KeyError)
            assert str(caught.value) == missing


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.put("d/one", b"1", content_type="text/plain")
    await store.put("d/two", b"2")
    await store.delete("d/one")
    with pytest.raises(ObjectNotFound):
        await store.get("d/one")
    await store.delete("d/one")
    await store.delete("d/never-was")
    await store.delete("nowhere/at/all")
    assert (await store.get("d/two")).data == b"2"
    assert await store.list_keys("d") == ["d/two"]

    await store.put("d/one", b"back")  # a deleted key's content type does not come back with it
    assert await store.get("d/one") == StoredObject(data=b"back", content_type=None)


async def test_prefixes_match_whole_segments(store: ObjectStore) -> None:
    keys = ["a/b/1", "a/b/2/x", "a/b/2/y.txt", "a/bc/3", "a/b.txt", "a/b-c/4", "ab/5", "z/a/b/6"]
    for key in keys:
        await store.put(key, key.encode(), content_type="text/plain")

    assert await store.list_keys("a/b") == ["a/b/1", "a/b/2/x", "a/b/2/y.txt"]
    assert await store.list_keys("a/b/2") == ["a/b/2/x", "a/b/2/y.txt"]
    assert await store.list_keys("a") == sorted(key for key in keys if key.startswith("a/"))
    assert await store.list_keys("a/b/1") == []
    assert await store.list_keys("none") == []

    assert await store.delete_prefix("a/b") == 3
    assert await store.list_keys("a/b") == []
    assert await store.delete_prefix("a/b") == 0
    assert await store.list_keys("a") == ["a/b-c/4", "a/b.txt", "a/bc/3"]
    for key in ("a/bc/3", "a/b.txt", "a/b-c/4", "ab/5", "z/a/b/6"):
        assert await store.get(key) == StoredObject(data=key.encode(), content_type="text/plain")
    with pytest.raises(ObjectNotFound):
        await store.get("a/b/2/x")


async def test_keys_with_every_allowed_character(store: ObjectStore) -> None:
    every = string.ascii_letters + string.digits + "._-"
    keys = [every, f"p/{every}/{every}", "p/...", "p/.hidden", "p/-", "p/_", "p/..x", "p/x..", "p/UPPER.lower-0_9"]
    for index, key in enumerate(keys):
        await store.put(key, str(index).encode())
    for index, key in enumerate(keys):
        assert (await store.get(key)).data == str(index).encode()
        assert (await store.head(key)).key == key
    assert await store.list_keys("p") == sorted(key for key in keys if key.startswith("p/"))
    assert await store.delete_prefix("p") == len(keys) - 1
    assert (await store.get(every)).data == b"0"


BAD_KEYS = [
    "",
    "../x",
    "x/..",
    "x/../y",
    "/x",
    "x/",
    "a//b",
    "a/./b",
    ".",
    "..",
    "a\\b",
    "a b",
    " a",
    "a\tb",
    "a\nb",
    "a\x00b",
    "caf\u00e9",
    "\u0430",  # Cyrillic a
    "x~y",
    "a%2Fb",
    "a?b",
    "a#b",
    "a:b",
    "x" * 513,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_validate_key_refuses(key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)


def test_validate_key_accepts_and_returns_the_key() -> None:
    for key in ("a", "a/b", "x" * 512, "a/" + "b" * 510, "...", "a-b_c.d/E9"):
        assert validate_key(key) == key


async def test_every_method_refuses_a_bad_key_before_touching_the_backend(store: ObjectStore) -> None:
    await store.put("safe/key", b"kept")
    for key in ("../x", "/x", "a//b", "a/./b", "a\\b", "a b", "", "\u00e9", "safe/"):
        calls = [
            store.put(key, b"x"),
            store.get(key),
            store.get_head(key, 1),
            store.head(key),
            store.delete(key),
            store.delete_prefix(key),
            store.list_keys(key),
        ]
        for call in calls:
            with pytest.raises(ValueError):
                await call
    with pytest.raises(ValueError):
        await store.get_head("safe/key", -1)
    with pytest.raises(ValueError):
        await store.put("safe/key", b"x", content_type="text/plain\r\nx-injected: 1")
    assert await store.get("safe/key") == StoredObject(data=b"kept", content_type=None)
    assert await store.list_keys("safe") == ["safe/key"]


async def test_a_5_mib_object(store: ObjectStore) -> None:
    data = os.urandom(5 * MIB)
    await store.put("big/blob.bin", data, content_type="application/octet-stream")
    assert await store.head("big/blob.bin") == ObjectInfo(key="big/blob.bin", size=5 * MIB, content_type="application/octet-stream")
    assert await store.get_head("big/blob.bin", 4096) == data[:4096]
    stored = await store.get("big/blob.bin")
    assert stored.data == data


async def test_concurrent_puts(store: ObjectStore) -> None:
    payloads = {f"many/{index:02d}/item": os.urandom(1000 + index) for index in range(20)}
    await asyncio.gather(*(store.put(key, data, content_type=f"x/{key[5:7]}") for key, data in payloads.items()))
    assert await store.list_keys("many") == sorted(payloads)
    for key, data in payloads.items():
        assert await store.get(key) == StoredObject(data=data, content_type=f"x/{key[5:7]}")

    versions = [bytes([index]) * 50_000 for index in range(20)]
    await asyncio.gather(*(store.put("same/key", data) for data in versions))
    assert (await store.get("same/key")).data in versions  # one whole version, never a mix
    assert await store.delete_prefix("many") == 20


# -- local only ------------------------------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_bytes(b"outside the root")
    return directory


async def test_local_layout_keeps_content_types_out_of_the_key_namespace(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalObjectStore(root)
    await store.put("a/b", b"data", content_type="text/csv")
    assert (root / "a" / "b").read_bytes() == b"data"
    assert (root / "a" / f"b{CONTENT_TYPE_SUFFIX}").read_bytes() == b"text/csv"
    assert await store.list_keys("a") == ["a/b"]
    with pytest.raises(ValueError):
        validate_key(f"a/b{CONTENT_TYPE_SUFFIX}")
    await store.put("a/b", b"data")
    assert not (root / "a" / f"b{CONTENT_TYPE_SUFFIX}").exists()
    assert sorted(path.name for path in (root / "a").iterdir()) == ["b"]  # no temp file left behind


async def test_local_delete_prefix_and_delete_remove_emptied_directories(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalObjectStore(root)
    await store.put("runs/r1/in/a", b"1", content_type="text/plain")
    await store.put("runs/r1/out/deep/b", b"2")
    await store.put("runs/r2/c", b"3")
    assert await store.delete_prefix("runs/r1") == 2
    assert not (root / "runs" / "r1").exists()
    assert (root / "runs" / "r2" / "c").read_bytes() == b"3"
    await store.delete("runs/r2/c")
    assert list(root.iterdir()) == []


async def test_local_a_key_cannot_also_be_a_prefix(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "root")
    await store.put("a/b", b"object")
    with pytest.raises(ValueError):
        await store.put("a/b/c", b"under an object")
    await store.put("x/y/z", b"object")
    with pytest.raises(ValueError):
        await store.put("x/y", b"over a directory")
    assert (await store.get("a/b")).data == b"object"
    assert await store.list_keys("x") == ["x/y/z"]


async def test_local_never_follows_a_directory_symlink_planted_in_the_root(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    store = LocalObjectStore(root)
    await store.put("real/file", b"inside")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "real" / "dirlink").symlink_to(outside, target_is_directory=True)

    for key in ("link/secret", "real/dirlink/secret"):
        with pytest.raises(StorageUnavailable):
            await store.get(key)
        with pytest.raises(StorageUnavailable):
            await store.get_head(key, 3)
        with pytest.raises(StorageUnavailable):
            await store.head(key)
        with pytest.raises(StorageUnavailable):
            await store.put(key, b"overwritten")
        with pytest.raises(StorageUnavailable):
            await store.put(key.replace("secret", "new/file"), b"planted")
        with pytest.raises(StorageUnavailable):
            await store.delete(key)
    assert await store.list_keys("real") == ["real/file"]
    assert await store.delete_prefix("real") == 1
    with pytest.raises(StorageUnavailable):
        await store.list_keys("link")
    with pytest.raises(StorageUnavailable):
        await store.delete_prefix("link")

    assert sorted(path.name for path in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"outside the root"


async def test_local_never_follows_a_file_symlink_planted_in_the_root(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    store = LocalObjectStore(root)
    await store.put("a/kept", b"kept", content_type="text/plain")
    (root / "a" / "leak").symlink_to(outside / "secret")
    (root / "a" / f"kept{CONTENT_TYPE_SUFFIX}").unlink()
    (root / "a" / f"kept{CONTENT_TYPE_SUFFIX}").symlink_to(outside / "secret")

    with pytest.raises(StorageUnavailable):
        await store.get("a/leak")
    with pytest.raises(StorageUnavailable):
        await store.get_head("a/leak", 7)
    with pytest.raises(StorageUnavailable):
        await store.head("a/leak")
    with pytest.raises(StorageUnavailable):
        await store.get("a/kept")  # its content type would be read through the symlink
    assert await store.list_keys("a") == ["a/kept"]

    await store.put("a/leak", b"written")  # replaces the link itself, never writes through it
    assert not (root / "a" / "leak").is_symlink()
    assert (await store.get("a/leak")).data == b"written"
    await store.put("a/kept", b"new", content_type="text/csv")
    assert await store.get("a/kept") == StoredObject(data=b"new", content_type="text/csv")
    await store.delete("a/kept")
    assert (outside / "secret").read_bytes() == b"outside the root"
    assert sorted(path.name for path in outside.iterdir()) == ["secret"]


async def test_local_root_symlink_is_resolved_once(tmp_path: Path) -> None:
    real = tmp_path / "real-root"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    store = LocalObjectStore(tmp_path / "alias")
    assert store.root == real.resolve()
    await store.put("k", b"v")
    assert (real / "k").read_bytes() == b"v"


async def test_local_check_refuses_an_unusable_root(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        await LocalObjectStore(blocker / "storage").check()
    store = LocalObjectStore(tmp_path / "fresh" / "storage")
    await store.check()
    assert (tmp_path / "fresh" / "storage").is_dir()
    assert list((tmp_path / "fresh" / "storage").iterdir()) == []


# -- S3 only ---------------------------------------------------------------------------------------------------------


async def test_s3_wrong_secret_key_is_storage_unavailable(s3_server: S3Server) -> None:
    wrong_secret = secrets.token_hex(20)
    store = s3_store(s3_server, secret_key=wrong_secret)
    try:
        for call in (store.check(), store.put("k", b"v"), store.get("k"), store.list_keys("k")):
            with pytest.raises(StorageUnavailable) as caught:
                await call
            message = str(caught.value)
            assert "403" in message
            assert wrong_secret not in message
            assert s3_server.secret_key not in message
    finally:
        await store.close()


async def test_s3_missing_bucket_fails_the_check(s3_server: S3Server) -> None:
    store = s3_store(s3_server, bucket=f"missing-{secrets.token_hex(4)}")
    try:
        with pytest.raises(StorageUnavailable) as caught:
            await store.check()
        assert store.bucket in str(caught.value)
        assert "NoSuchBucket" in str(caught.value)
        for call in (store.put("k", b"v"), store.get("k"), store.delete("k"), store.list_keys("k")):
            with pytest.raises(StorageUnavailable):
                await call
    finally:
        await store.close()


async def test_s3_unreachable_endpoint_is_storage_unavailable() -> None:
    with socket_closed_port() as port:
        store = S3ObjectStore("bucket", f"http://127.0.0.1:{port}", None, "AK", "SECRETSECRET")
        try:
            with pytest.raises(StorageUnavailable) as caught:
                await store.check()
            assert "SECRETSECRET" not in str(caught.value)
            with pytest.raises(StorageUnavailable):
                await store.get("k")
        finally:
            await store.close()


async def test_s3_list_follows_continuation_tokens(s3_server: S3Server) -> None:
    bucket = f"t-{secrets.token_hex(6)}"
    s3_server.create_bucket(bucket)
    store = s3_store(s3_server, bucket=bucket)
    store.list_page_size = 4
    try:
        keys = [f"pages/{index:02d}" for index in range(19)]
        await asyncio.gather(*(store.put(key, b"x") for key in keys))
        await store.put("pagesX/outside", b"y")
        first_page, token = await store._list_page("pages/", None, 4)
        assert len(first_page) == 4 and token  # the server really pages
        assert await store.list_keys("pages") == keys
        assert await store.delete_prefix("pages") == 19
        assert await store.list_keys("pages") == []
        assert (await store.get("pagesX/outside")).data == b"y"
    finally:
        await store.close()


async def test_s3_get_head_is_a_range_read(s3_server: S3Server) -> None:
    store = s3_store(s3_server)
    answers: list[httpx.Response] = []

    async def record(response: httpx.Response) -> None:
        answers.append(response)

    store._client.event_hooks["response"].append(record)
    try:
        data = os.urandom(MIB)
        await store.put("range/blob", data)
        answers.clear()
        assert await store.get_head("range/blob", 10) == data[:10]
        assert [(answer.request.headers["range"], answer.status_code, answer.headers["content-length"]) for answer in answers] == [
            ("bytes=0-9", 206, "10")
        ]
    finally:
        await store.close()


async def test_s3_objects_written_by_other_tools_keep_their_content_type(s3_server: S3Server) -> None:
    """An object uploaded without our untyped marker reports the server's content type; a raw signed PUT stands in for another tool."""
    path = f"/{s3_server.bucket}/foreign/{secrets.token_hex(4)}"
    with httpx.Client(timeout=10, trust_env=False) as client:
        headers = sign(
            method="PUT",
            host=f"127.0.0.1:{s3_server.ports['s3']}",
            canonical_uri=path,
            query="",
            headers={"content-type": "text/markdown"},
            body_sha256=payload_hash(b"# hi"),
            credentials=Credentials(s3_server.access_key, s3_server.secret_key),
            region=s3_server.region,
        )
        response = client.put(s3_server.endpoint_url + path, content=b"# hi", headers=headers)
        assert response.status_code == 200, error_code(response.content)
    store = s3_store(s3_server)
    try:
        key = path.split("/", 2)[2]
        assert await store.get(key) == StoredObject(data=b"# hi", content_type="text/markdown")
    finally:
        await store.close()


# -- make_object_store ---------------------------------------------------------------------------------------------


def test_make_object_store_local_lives_under_data_dir(tmp_path: Path) -> None:
    store = make_object_store(backend="local", data_dir=tmp_path, s3_bucket=None, s3_endpoint_url=None, s3_region=None, environ={})
    assert isinstance(store, LocalObjectStore)
    assert store.kind == "local"
    assert store.root == (tmp_path / "storage").resolve()


def test_make_object_store_s3_names_every_missing_variable(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        make_object_store(backend="s3", data_dir=tmp_path, s3_bucket=None, s3_endpoint_url=None, s3_region=None, environ={})
    assert all(name in str(caught.value) for name in ("S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    with pytest.raises(ValueError) as caught:
        make_object_store(
            backend="s3", data_dir=tmp_path, s3_bucket="b-1", s3_endpoint_url=None, s3_region=None, environ={"AWS_ACCESS_KEY_ID": "AK"}
        )
    assert "AWS_SECRET_ACCESS_KEY" in str(caught.value)
    assert "S3_BUCKET" not in str(caught.value) and "AWS_ACCESS_KEY_ID" not in str(caught.value)
    with pytest.raises(ValueError):
        make_object_store(backend="gcs", data_dir=tmp_path, s3_bucket=None, s3_endpoint_url=None, s3_region=None, environ={})


async def test_make_object_store_s3_defaults(tmp_path: Path) -> None:
    environ = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "the-secret", "AWS_SESSION_TOKEN": "the-token"}
    store = make_object_store(backend="s3", data_dir=tmp_path, s3_bucket="my-bucket", s3_endpoint_url=None, s3_region=None, environ=environ)
    try:
        assert isinstance(store, S3ObjectStore)
        assert store.kind == "s3"
        assert store.region == "us-east-1"
        assert store.endpoint_url == "https://s3.us-east-1.amazonaws.com"
        assert "the-secret" not in repr(store) and "the-token" not in repr(store)
    finally:
        await store.close()
    store = make_object_store(
        backend="S3", data_dir=tmp_path, s3_bucket="my-bucket", s3_endpoint_url=None, s3_region="eu-west-3", environ=environ
    )
    try:
        assert isinstance(store, S3ObjectStore)
        assert store.endpoint_url == "https://s3.eu-west-3.amazonaws.com"
    finally:
        await store.close()


async def test_make_object_store_runs_against_the_test_server(s3_server: S3Server, tmp_path: Path) -> None:
    env = s3_server.env()
    assert env["STORAGE_BACKEND"] == "s3"
    store = make_object_store(
        backend=env["STORAGE_BACKEND"],
        data_dir=tmp_path,
        s3_bucket=env["S3_BUCKET"],
        s3_endpoint_url=env["S3_ENDPOINT_URL"],
        s3_region=env["S3_REGION"],
        environ=env,
    )
    try:
        await store.check()
        await store.put("env/round-trip", b"ok")
        assert (await store.get("env/round-trip")).data == b"ok"
    finally:
        await store.close()


# -- SigV4 against the examples of the AWS S3 documentation ----------------------------------------------------------

AWS_EXAMPLE = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
AWS_EXAMPLE_TIME = datetime(2013, 5, 24, tzinfo=UTC)
AWS_HOST = "examplebucket.s3.amazonaws.com"


def test_sigv4_get_object_with_range() -> None:
    headers = sign(
        method="GET",
        host=AWS_HOST,
        canonical_uri="/test.txt",
        query="",
        headers={"Range": "bytes=0-9"},
        body_sha256=EMPTY_SHA256,
        credentials=AWS_EXAMPLE,
        region="us-east-1",
        now=AWS_EXAMPLE_TIME,
    )
    assert headers["authorization"].endswith(
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert headers["x-amz-date"] == "20130524T000000Z"


def test_sigv4_put_object_with_payload_hash() -> None:
    headers = sign(
        method="PUT",
        host=AWS_HOST,
        canonical_uri="/" + uri_encode("test$file.text", keep_slash=True),
        query="",
        headers={"Date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY"},
        body_sha256=payload_hash(b"Welcome to Amazon S3."),
        credentials=AWS_EXAMPLE,
        region="us-east-1",
        now=AWS_EXAMPLE_TIME,
    )
    assert headers["x-amz-content-sha256"] == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    assert headers["authorization"].endswith("Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")


def test_sigv4_list_objects_with_sorted_query() -> None:
    headers = sign(
        method="GET",
        host=AWS_HOST,
        canonical_uri="/",
        query=canonical_query([("prefix", "J"), ("max-keys", "2")]),
        headers={},
        body_sha256=EMPTY_SHA256,
        credentials=AWS_EXAMPLE,
        region="us-east-1",
        now=AWS_EXAMPLE_TIME,
    )
    assert headers["authorization"].endswith("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")


def test_sigv4_encoding_and_session_token() -> None:
    assert uri_encode("a b/c+d~e=f", keep_slash=True) == "a%20b/c%2Bd~e%3Df"
    assert uri_encode("a/b\u00e9", keep_slash=False) == "a%2Fb%C3%A9"
    assert canonical_query([("z", "1"), ("continuation-token", "x+/="), ("a", "")]) == "a=&continuation-token=x%2B%2F%3D&z=1"
    with_token = Credentials("AK", "SK", "TOKEN")
    headers = sign(
        method="GET",
        host="h",
        canonical_uri="/b",
        query="",
        headers={},
        body_sha256=EMPTY_SHA256,
        credentials=with_token,
        region="r",
        now=AWS_EXAMPLE_TIME,
    )
    assert headers["x-amz-security-token"] == "TOKEN"
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token," in headers["authorization"]
    assert "SK" not in repr(with_token) and "TOKEN" not in repr(with_token)


# -- helpers ---------------------------------------------------------------------------------------------------------


@contextmanager
def socket_closed_port() -> Iterator[int]:
    """A loopback port that nothing listens on for the duration of the block (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
