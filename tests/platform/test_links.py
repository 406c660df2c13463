"""Signed storage links on local storage: resolve one address or a list, follow the link without a credential, and
every tampered part, an expired link, a gone object and another caller's address refused."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from pipelex_sdk.artifact_models import BulkResolvedStorageUrls
from pipelex_sdk.product_models import ResolvedStorageUrl

from tests.platform.test_files import PNG, SECRET, assert_problem, bearer, fresh_callers, upload  # noqa: F401 (fixture)


@pytest.fixture
async def jwt_app(make_app: Any, database_url: str) -> Any:
    return await make_app(auth_mode="jwt", jwt_secret_key=SECRET, public_base_url="https://files.example.test", database_url=database_url)


def relative(url: str) -> tuple[str, dict[str, str]]:
    """The link's path and query, to follow it through the in-process client (its host is PUBLIC_BASE_URL)."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://files.example.test"
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


async def resolve(app: Any, user: str, uri: str) -> ResolvedStorageUrl:
    response = await app.client.post("/v1/resolve-storage-url", json={"uri": uri}, headers=bearer(user))
    assert response.status_code == 200, response.text
    return ResolvedStorageUrl.model_validate(response.json())


async def test_a_resolved_link_downloads_without_a_credential(jwt_app: Any) -> None:
    uploaded = await upload(jwt_app, "ann", "pixel.png", PNG, "image/png")
    resolved = await resolve(jwt_app, "ann", uploaded.uri)
    assert resolved.content_type == "image/png"
    path, query = relative(resolved.url)
    download = await jwt_app.client.get(path, params=query)
    assert download.status_code == 200 and download.content == PNG
    assert download.headers["x-content-type-options"] == "nosniff"


async def test_tampering_any_part_of_a_link_is_refused(jwt_app: Any) -> None:
    first = await upload(jwt_app, "bo", "a.txt", b"first")
    second = await upload(jwt_app, "bo", "b.txt", b"second")
    path, query = relative((await resolve(jwt_app, "bo", first.uri)).url)
    other_path, _ = relative((await resolve(jwt_app, "bo", second.uri)).url)
    assert (await jwt_app.client.get(path, params=query)).status_code == 200
    tampered = [
        (other_path, query),  # another object of the same caller
        (path, {**query, "caller": "cy"}),
        (path, {**query, "expires": str(int(query["expires"]) + 3600)}),
        (path, {**query, "name": "evil.html"}),
        (path, {**query, "type": "text/html"}),
        (path, {**query, "signature": ("0" if query["signature"][0] != "0" else "1") + query["signature"][1:]}),
        (path, {key: value for key, value in query.items() if key != "signature"}),
        (path, {**query, "signature": "é" * 64}),
    ]
    for tampered_path, tampered_query in tampered:
        response = await jwt_app.client.get(tampered_path + "?" + urlencode(tampered_query))
        assert_problem(response, 403, "auth.forbidden")
    # a link signed for one caller's object never opens another caller's object of the same name
    cy = await upload(jwt_app, "cy", "a.txt", b"cy's")
    cy_path, _ = relative((await resolve(jwt_app, "cy", cy.uri)).url)
    assert_problem(await jwt_app.client.get(cy_path, params=query), 403, "auth.forbidden")


async def test_an_expired_link_and_a_gone_object(jwt_app: Any) -> None:
    uploaded = await upload(jwt_app, "dee", "a.txt", b"short-lived")
    signer = jwt_app.services.files.service.signer
    signer._clock = lambda: time.time() - 2 * signer.ttl_seconds  # signed long ago: already past its expiry
    try:
        path, query = relative((await resolve(jwt_app, "dee", uploaded.uri)).url)
    finally:
        signer._clock = time.time
    document = assert_problem(await jwt_app.client.get(path, params=query), 403, "auth.forbidden")
    assert "expired" in document["detail"]

    path, query = relative((await resolve(jwt_app, "dee", uploaded.uri)).url)
    upload_id = uploaded.uri.rsplit("/", 1)[-1].split(".")[0]
    assert (await jwt_app.client.delete(f"/api/v1/uploads/{upload_id}", headers=bearer("dee"))).status_code == 204
    assert_problem(await jwt_app.client.get(path, params=query), 404, "pipelex.storage.not_found")


async def test_bulk_resolve_answers_one_item_per_address_with_errors_as_values(jwt_app: Any) -> None:
    uploaded = await upload(jwt_app, "eve", "a.txt", b"bulk")
    other = await upload(jwt_app, "fay", "b.txt", b"not eve's")
    uris = [uploaded.uri, "https://example.com/x.pdf", other.uri, uploaded.uri, "pipelex-storage://eve/../x"]
    response = await jwt_app.client.post("/v1/resolve-storage-url/bulk", json={"uris": uris}, headers=bearer("eve"))
    result = BulkResolvedStorageUrls.model_validate(response.json())
    assert [item.uri for item in result.items] == uris
    assert [item.error.code if item.error else None for item in result.items] == [
        None,
        "invalid_storage_uri",
        "forbidden",
        None,
        "invalid_storage_uri",
    ]
    assert result.items[0].url and result.items[0].content_type == "text/plain"
    too_many = await jwt_app.client.post("/v1/resolve-storage-url/bulk", json={"uris": [uploaded.uri] * 101}, headers=bearer("eve"))
    assert_problem(too_many, 422, "request.invalid")
    single = await jwt_app.client.post("/v1/resolve-storage-url", json={"uri": other.uri}, headers=bearer("eve"))
    assert_problem(single, 403, "pipelex.org.mismatch")
    assert_problem(await jwt_app.client.post("/v1/resolve-storage-url", json={"uri": other.uri}), 401, "auth.missing_credential")


async def test_processes_sharing_the_signing_key_honour_each_others_links(make_app: Any) -> None:
    key = "k" * 40
    settings = {"auth_mode": "jwt", "jwt_secret_key": SECRET, "public_base_url": "https://files.example.test"}
    first = await make_app(**settings, storage_link_signing_key=key)
    second = await make_app(**settings, storage_link_signing_key=key)
    alone = await make_app(**settings)  # no key: signs with a key of its own process
    uploaded = await upload(first, "gil", "a.txt", b"shared")
    path, query = relative((await resolve(first, "gil", uploaded.uri)).url)
    assert (await second.client.get(path, params=query)).content == b"shared"
    document = assert_problem(await alone.client.get(path, params=query), 403, "auth.forbidden")
    assert "STORAGE_LINK_SIGNING_KEY" in document["detail"]


async def test_a_short_signing_key_stops_the_boot(make_app: Any) -> None:
    from pipelex_server.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="STORAGE_LINK_SIGNING_KEY"):
        await make_app(storage_link_signing_key="too-short")
