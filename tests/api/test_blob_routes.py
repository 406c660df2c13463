"""The protocol's blob routes: `POST /v1/blobs/missing` names signed upload targets, `PUT /v1/blobs/{sha256}` stores a
blob under the scope its target names, checked against its hash. Refusals (forged or expired targets, wrong bytes,
oversized bodies, hostile hashes, another caller's scope) are 4xx protocol problems with nothing stored; and the official
`MthdsAPIClient` uploads only what the server lacks."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from mthds.method_tree.file_entry import HashFileEntry
from mthds.runners.api.client import MthdsAPIClient

from pipelex_server.blobs import sha256_of
from pipelex_server.errors import ConfigurationError
from pipelex_server.settings import Settings
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT
from tests.support.runs import served

MISSING = "/v1/blobs/missing"
SECRET = "jwt-test-secret-that-is-long-enough-for-hs256"
SIGNING_KEY = "blob-signing-key-for-the-tests-0123456789"
UPLOAD_LOG = "blob upload received"


def unique(size: int = 64) -> bytes:
    """Bytes no other test stores (the session app's store is shared)."""
    seed = uuid.uuid4().hex.encode()
    return (seed * (size // len(seed) + 1))[:size]


def ref(data: bytes) -> dict[str, Any]:
    return {"sha256": sha256_of(data), "size": len(data)}


def bearer(user_id: str) -> dict[str, str]:
    claims = {"user_id": user_id, "exp": int(time.time()) + 300}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    return url.split("?", 1)[0] + "?" + urlencode({**query_of(url), **changes})


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == code
    assert {"domain", "retry", "next_step"} <= problem.keys(), problem  # a protocol reader's members
    return problem


async def targets(http: httpx.AsyncClient, *blobs: bytes, headers: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    response = await http.post(MISSING, json={"blobs": [ref(data) for data in blobs]}, headers=headers)
    assert response.status_code == 200, response.text
    return {item["sha256"]: item for item in response.json()["missing"]}


async def held(app: Any, scope: str, data: bytes) -> bool:
    return await app.services.blobs.blobs.get(scope, sha256_of(data)) == data


# ---------------------------------------------------------------- the round trip


async def test_missing_then_put_then_nothing_missing(session_app) -> None:
    http, first, second = session_app.client, unique(), unique(300)
    named = await targets(http, first, second)
    assert list(named) == [sha256_of(first), sha256_of(second)]  # the request's order
    for data in (first, second):
        target = named[sha256_of(data)]
        assert target["size"] == len(data)
        assert target["upload"]["method"] == "PUT"
        assert target["upload"]["headers"] == {"content-type": "application/octet-stream"}
        assert target["upload"]["url"].startswith(f"http://testserver/v1/blobs/{sha256_of(data)}?")
        assert set(query_of(target["upload"]["url"])) == {"scope", "size", "expires", "signature"}
        put = await http.put(target["upload"]["url"], content=data, headers=target["upload"]["headers"])
        assert put.status_code == 204, put.text
        assert await held(session_app, "shared", data)

    assert await targets(http, first, second) == {}
    again = named[sha256_of(first)]["upload"]
    assert (await http.put(again["url"], content=first, headers=again["headers"])).status_code == 204  # idempotent
    assert await targets(http) == {}  # an empty list asks nothing


async def test_version_announces_the_blob_store(client) -> None:
    assert (await client.get("/v1/version")).json()["blob_store"] is True


async def test_targets_start_with_public_base_url(make_app) -> None:
    app = await make_app(public_base_url="https://runner.example.com/pipelex/")
    data = unique()
    url = (await targets(app.client, data))[sha256_of(data)]["upload"]["url"]
    assert url.startswith(f"https://runner.example.com/pipelex/v1/blobs/{sha256_of(data)}?scope=shared&")


def test_bad_blob_settings_stop_the_boot() -> None:
    for bad in ("runner.example.com", "ftp://runner.example.com", "https://runner.example.com/?x=1", "https://#frag"):
        with pytest.raises((ConfigurationError, ValueError), match="PUBLIC_BASE_URL"):
            Settings(public_base_url=bad)
    with pytest.raises((ConfigurationError, ValueError), match="BLOB_UPLOAD_SIGNING_KEY"):
        Settings(blob_upload_signing_key="short")


# ---------------------------------------------------------------- refused uploads


async def test_a_forged_or_missing_signature_is_403(session_app) -> None:
    http, data = session_app.client, unique()
    url = (await targets(http, data))[sha256_of(data)]["upload"]["url"]
    signature = query_of(url)["signature"]
    forged = [
        url.split("?", 1)[0],
        with_query(url, signature=("0" if signature[0] != "0" else "1") + signature[1:]),
        with_query(url, signature="ä" * 64),
        with_query(url, size=str(len(data) + 1)),
        with_query(url, expires=str(int(query_of(url)["expires"]) + 3600)),
        with_query(url, expires="-1"),
    ]
    for target in forged:
        problem = assert_problem(await http.put(target, content=data), 403, "auth.forbidden")
        assert problem["params"] == {"requirement": "signed_upload_target"}
    assert not await held(session_app, "shared", data)


async def test_an_expired_target_is_403(session_app) -> None:
    http, data = session_app.client, unique()
    sha256, signer = sha256_of(data), session_app.services.blobs.signer
    expires = int(time.time()) - 1
    signature = signer.signature(scope="shared", sha256=sha256, size=len(data), expires=expires)
    url = f"/v1/blobs/{sha256}?scope=shared&size={len(data)}&expires={expires}&signature={signature}"
    problem = assert_problem(await http.put(url, content=data), 403, "auth.forbidden")
    assert "expired" in problem["detail"]
    assert not await held(session_app, "shared", data)


async def test_bytes_that_are_not_the_blob_are_422_and_not_stored(session_app) -> None:
    http, data = session_app.client, unique()
    url = (await targets(http, data))[sha256_of(data)]["upload"]["url"]
    impostor = bytes(reversed(data))  # same size, other bytes
    problem = assert_problem(await http.put(url, content=impostor), 422, "request.invalid")
    assert problem["params"]["field"] == "body"
    problem = assert_problem(await http.put(url, content=data[:-1]), 422, "request.invalid")  # shorter than signed
    assert problem["params"]["field"] == "body"
    assert not await held(session_app, "shared", data)
    assert not await held(session_app, "shared", impostor)


async def test_oversized_blobs_are_refused(make_app) -> None:
    # MAX_REQUEST_BODY_MIB does not bound blob uploads (their own limit does): 2 KiB blobs pass a 1 KiB request limit
    app = await make_app(max_method_tree_file_kib=2, max_request_body_mib=1 / 1024, blob_upload_signing_key=SIGNING_KEY)
    fits, too_big = unique(2048), unique(2049)
    url = (await targets(app.client, fits))[sha256_of(fits)]["upload"]["url"]
    assert (await app.client.put(url, content=fits)).status_code == 204

    problem = assert_problem(await app.client.post(MISSING, json={"blobs": [ref(too_big)]}), 422, "method.package_invalid")
    assert problem["params"] == {"reason": "file_too_large", "limit": 2048, "path": sha256_of(too_big)}

    # a target signed for a larger blob (another server's limit) still stops at this server's limit, declared or streamed
    signer = app.services.blobs.signer
    signed = signer.query(scope="shared", sha256=sha256_of(too_big), size=len(too_big))
    put_url = f"/v1/blobs/{sha256_of(too_big)}"
    problem = assert_problem(await app.client.put(put_url, params=signed, content=too_big), 413, "request.too_large")
    assert problem["params"]["limit"] == 2048

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(too_big), 512):
            yield too_big[start : start + 512]

    assert_problem(await app.client.put(put_url, params=signed, content=chunks()), 413, "request.too_large")
    # a body longer than the size its target names is refused the same way
    small = unique(100)
    target = (await targets(app.client, small))[sha256_of(small)]["upload"]["url"]
    assert_problem(await app.client.put(target, content=small + b"!"), 413, "request.too_large")
    assert not await held(app, "shared", too_big) and not await held(app, "shared", small)


async def test_missing_refuses_bad_lists(make_app) -> None:
    app = await make_app(max_method_tree_files=2, max_method_tree_total_kib=1)
    a, b, c = unique(10), unique(10), unique(10)
    problem = assert_problem(await app.client.post(MISSING, json={"blobs": [ref(a), ref(b), ref(c)]}), 422, "method.package_invalid")
    assert problem["params"] == {"reason": "too_many_files", "limit": 2}
    problem = assert_problem(
        await app.client.post(MISSING, json={"blobs": [ref(unique(700)), ref(unique(700))]}), 422, "method.package_invalid"
    )
    assert problem["params"] == {"reason": "tree_too_large", "limit": 1024}
    twice = [ref(a), {**ref(a), "size": 11}]
    assert assert_problem(await app.client.post(MISSING, json={"blobs": twice}), 422, "request.invalid")["params"]["field"] == "blobs"
    sha = sha256_of(a)
    for blob in (
        {"sha256": sha.upper(), "size": 10},
        {"sha256": sha[:-1], "size": 10},
        {"sha256": "../" + sha[3:], "size": 10},
        {"sha256": sha, "size": -1},
        {"sha256": sha, "size": 10.0},
        {"sha256": sha, "size": True},
        {"sha256": sha, "size": "10"},
        {"sha256": sha, "size": 10, "path": "x"},
        {"sha256": sha},
    ):
        assert_problem(await app.client.post(MISSING, json={"blobs": [blob]}), 422, "request.invalid")
    assert_problem(await app.client.post(MISSING, json={"blobs": [], "digest": "md5:x"}), 422, "request.invalid")
    assert_problem(await app.client.post(MISSING, content=b"{", headers={"content-type": "application/json"}), 422, "request.malformed")


async def test_hostile_hash_paths_are_refused_and_write_nothing(session_app) -> None:
    http, data = session_app.client, unique()
    sha256 = sha256_of(data)
    url = (await targets(http, data))[sha256]["upload"]["url"]
    query = urlsplit(url).query
    store = session_app.services.store
    before = set(await store.list_keys("shared/blobs"))
    for path in (
        sha256.upper(),
        sha256[:-1],
        sha256 + "0",
        sha256 + "%0a",
        "%2e%2e%2f%2e%2e%2fshared%2fblobs%2f" + sha256,
        "..%2F" + sha256,
        "%00" + sha256[1:],
        "x" * 10_000,
        "",
    ):
        response = await http.put(f"/v1/blobs/{path}?{query}", content=data)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), path
    assert set(await store.list_keys("shared/blobs")) == before


# ---------------------------------------------------------------- callers' scopes


async def test_each_caller_has_its_own_blobs_and_targets(make_app) -> None:
    app = await make_app(auth_mode="jwt", jwt_secret_key=SECRET)
    data = unique()
    sha256 = sha256_of(data)
    assert_problem(await app.client.post(MISSING, json={"blobs": [ref(data)]}), 401, "auth.missing_credential")

    alice_url = (await targets(app.client, data, headers=bearer("alice")))[sha256]["upload"]["url"]
    assert query_of(alice_url)["scope"] == "alice"
    # bob cannot point alice's target at his own scope
    assert_problem(await app.client.put(with_query(alice_url, scope="bob"), content=data), 403, "auth.forbidden")
    # the target needs no bearer token; whoever sends it, the blob lands in the scope it was signed for
    assert (await app.client.put(alice_url, content=data, headers=bearer("bob"))).status_code == 204
    assert await held(app, "alice", data) and not await held(app, "bob", data)
    assert await targets(app.client, data, headers=bearer("alice")) == {}
    assert list(await targets(app.client, data, headers=bearer("bob"))) == [sha256]  # bob still lacks it


# ---------------------------------------------------------------- the official client, end to end

# Two files, one blob (equal bytes are one blob), plus the method: uploaded once, then never again.
TREE = {"hello.mthds": SEED_BUNDLE.encode(), "notes/a.md": b"# notes\n", "notes/b.md": b"# notes\n"}


def uploads_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith(UPLOAD_LOG)]


async def test_the_official_client_uploads_only_what_the_server_lacks(make_app, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pipelex_server.blob_uploads")
    app = await make_app(allowed_hosts=["testserver", "127.0.0.1"])
    contents = {**TREE, "salt.txt": unique()}  # one blob this test is first to send
    lacking = await app.services.blobs.blobs.missing("shared", {sha256_of(data): len(data) for data in contents.values()})
    assert sha256_of(contents["salt.txt"]) in lacking
    async with served(app.app) as base, MthdsAPIClient(api_key="unused", base_url=base, request_timeout_seconds=60) as client:
        first = await client.prepare_files_from_contents(contents, inline_max_bytes=0)
        assert all(isinstance(entry, HashFileEntry) for entry in first.values())
        sent = len(uploads_logged(caplog))
        assert sent == len(lacking)  # one PUT per blob the server lacked (notes/a.md and notes/b.md are one blob)
        assert [data for data in contents.values() if not await held(app, "shared", data)] == []

        second = await client.prepare_files_from_contents(contents, inline_max_bytes=0)
        assert second == first
        assert len(uploads_logged(caplog)) == sent  # the second time, nothing is uploaded


async def test_the_official_client_runs_a_method_sent_by_hash_twice_uploading_once(make_app, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pipelex_server.blob_uploads")
    app = await make_app(allowed_hosts=["testserver", "127.0.0.1"])
    contents = {"hello.mthds": SEED_BUNDLE.encode() + f"\n# {uuid.uuid4().hex}\n".encode()}  # a method this test sends first
    async with served(app.app) as base, MthdsAPIClient(api_key="unused", base_url=base, request_timeout_seconds=60) as client:
        results = []
        for _ in range(2):
            files = await client.prepare_files_from_contents(contents, inline_max_bytes=0)
            assert all(isinstance(entry, HashFileEntry) for entry in files.values())
            results.append(await client.execute(pipe_code="summarize", files=files, inputs={"text": SEED_TEXT}))
        assert len(uploads_logged(caplog)) == 1  # the first run uploaded the method, the second nothing
    for result in results:
        main = result.pipe_output.working_memory.root[result.model_extra["main_stuff_name"]]
        assert main.content["text"].startswith("STUB: Summarize")
