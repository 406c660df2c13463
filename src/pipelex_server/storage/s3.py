"""Objects in an S3 bucket (AWS or any S3-compatible server), path-style, signed with SigV4 over one httpx client."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from pipelex_server.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
    StoredObject,
    validate_content_type,
    validate_key,
    validate_nb_bytes,
)
from pipelex_server.storage.sigv4 import Credentials, canonical_query, payload_hash, sign, uri_encode

DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 60.0
DELETE_CONCURRENCY = 8
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ERROR_CODE = re.compile(r"[A-Za-z0-9.]{1,64}")
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound"})
# S3 gives every object a content type (its default when the upload had none); this user metadata marks the objects
# stored without one, so that they read back as None like on the local backend.
UNTYPED_HEADER = "x-amz-meta-pipelex-untyped"


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(body: bytes) -> ET.Element | None:
    # The body comes from the S3 endpoint the operator configured; expat >= 2.4.1 caps entity expansion.
    try:
        return ET.fromstring(body)  # noqa: S314
    except ET.ParseError:
        return None


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local_name(child.tag) == name:
            return child.text or ""
    return None


def error_code(body: bytes) -> str | None:
    """The `Code` of an S3 error document, when it has a plausible one (never any other part of the body)."""
    root = _parse_xml(body) if body else None
    if root is None:
        return None
    code = _child_text(root, "Code")
    return code if code and _ERROR_CODE.fullmatch(code) else None


@dataclass(frozen=True)
class _Reply:
    """An S3 answer, its body read whole."""

    status_code: int
    headers: httpx.Headers
    content: bytes


def _content_type(response: _Reply) -> str | None:
    return None if UNTYPED_HEADER in response.headers else response.headers.get("content-type")


class S3ObjectStore(ObjectStore):
    """One bucket, path-style addressing: `{endpoint}/{bucket}/{key}`."""

    kind = "s3"
    list_page_size: int | None = None  # ListObjectsV2 max-keys; None leaves the server's default (1000 on AWS)

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None,
        region: str | None,
        access_key: str,
        secret_key: str,
        session_token: str | None = None,
    ) -> None:
        if not _BUCKET.fullmatch(bucket or ""):
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        if not access_key or not secret_key:
            raise ValueError("S3 needs an access key and a secret key")
        self.bucket = bucket
        self.region = region or DEFAULT_REGION
        endpoint = httpx.URL((endpoint_url or f"https://s3.{self.region}.amazonaws.com").rstrip("/"))
        if endpoint.scheme not in ("http", "https") or not endpoint.host:
            raise ValueError(f"S3 endpoint must be an http(s) URL, not {endpoint_url!r}")
        if endpoint.userinfo or endpoint.query or endpoint.fragment:
            raise ValueError("S3 endpoint must not hold credentials, a query or a fragment")
        self.endpoint_url = str(endpoint)
        self._origin = f"{endpoint.scheme}://{endpoint.netloc.decode('ascii')}"
        self._host = endpoint.netloc.decode("ascii")
        self._bucket_path = f"{endpoint.raw_path.decode('ascii').rstrip('/')}/{uri_encode(bucket, keep_slash=False)}"
        self._credentials = Credentials(access_key, secret_key, session_token or None)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(TOTAL_TIMEOUT, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"S3ObjectStore(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r}, region={self.region!r})"

    # -- requests ------------------------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        key: str | None,
        *,
        what: str,
        query: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> _Reply:
        """Sign and send one request and read its body as sent (no content decoding); transport failures and
        timeouts become StorageUnavailable."""
        path = self._bucket_path if key is None else f"{self._bucket_path}/{uri_encode(key, keep_slash=True)}"
        query_string = canonical_query(query)
        signed = sign(
            method=method,
            host=self._host,
            canonical_uri=path,
            query=query_string,
            headers=headers or {},
            body_sha256=payload_hash(body),
            credentials=self._credentials,
            region=self.region,
        )
        url = self._origin + path + (f"?{query_string}" if query_string else "")
        request = self._client.build_request(method, url, content=body if method in ("PUT", "POST") else None, headers=signed)
        request.headers["accept-encoding"] = "identity"  # the bytes as stored, never a transfer-compressed form
        try:
            async with asyncio.timeout(TOTAL_TIMEOUT):
                response = await self._client.send(request, stream=True)
                try:
                    content = b"".join([chunk async for chunk in response.aiter_raw()])
                finally:
                    await response.aclose()
            return _Reply(status_code=response.status_code, headers=response.headers, content=content)
        except (httpx.HTTPError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise StorageUnavailable(f"S3 {what} at {self.endpoint_url} failed: {detail}") from exc

    def _failure(self, response: _Reply, *, what: str, key: str | None) -> Exception:
        """The exception for an unexpected answer: ObjectNotFound for a missing key, StorageUnavailable otherwise."""
        code = error_code(response.content)
        if response.status_code == 404 and key is not None and (code is None or code in _NOT_FOUND_CODES):
            return ObjectNotFound(key)
        detail = f"HTTP {response.status_code}" + (f" {code}" if code else "")
        if response.status_code == 403:
            detail += " (access refused: check the credentials and the bucket policy)"
        elif code == "NoSuchBucket" or (response.status_code == 404 and key is None):
            detail += f" (bucket {self.bucket!r} does not exist)"
        return StorageUnavailable(f"S3 {what} on bucket {self.bucket!r} at {self.endpoint_url}: {detail}")

    async def _list_page(self, prefix: str, token: str | None, max_keys: int | None = None) -> tuple[list[str], str | None]:
        query = [("list-type", "2"), ("prefix", prefix)]
        if token:
            query.append(("continuation-token", token))
        if max_keys is not None:
            query.append(("max-keys", str(max_keys)))
        response = await self._send("GET", None, what="ListObjectsV2", query=query)
        if response.status_code != 200:
            raise self._failure(response, what="ListObjectsV2", key=None)
        root = _parse_xml(response.content)
        if root is None or _local_name(root.tag) != "ListBucketResult":
            raise StorageUnavailable(f"S3 ListObjectsV2 on bucket {self.bucket!r} answered an unreadable document")
        keys = [key for element in root if _local_name(element.tag) == "Contents" and (key := _child_text(element, "Key"))]
        truncated = (_child_text(root, "IsTruncated") or "").strip().lower() == "true"
        next_token = _child_text(root, "NextContinuationToken") if truncated else None
        if truncated and not next_token:
            raise StorageUnavailable(f"S3 ListObjectsV2 on bucket {self.bucket!r} is truncated without a continuation token")
        return keys, next_token

    async def _all_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix + "/"`, whatever its form (objects other tools wrote included)."""
        keys: list[str] = []
        token: str | None = None
        while True:
            page, token = await self._list_page(prefix + "/", token, self.list_page_size)
            keys.extend(page)
            if token is None:
                return keys

    async def _delete_raw(self, key: str) -> None:
        response = await self._send("DELETE", key, what="DeleteObject")
        if response.status_code in (200, 204) or (response.status_code == 404 and error_code(response.content) != "NoSuchBucket"):
            return
        raise self._failure(response, what="DeleteObject", key=None)

    # -- the interface -------------------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        validate_key(key)
        validate_content_type(content_type)
        headers = {"content-type": content_type} if content_type else {UNTYPED_HEADER: "1"}
        response = await self._send("PUT", key, what="PutObject", body=bytes(data), headers=headers)
        if response.status_code != 200:
            raise self._failure(response, what="PutObject", key=None)

    async def get(self, key: str) -> StoredObject:
        validate_key(key)
        response = await self._send("GET", key, what="GetObject")
        if response.status_code != 200:
            raise self._failure(response, what="GetObject", key=key)
        return StoredObject(data=response.content, content_type=_content_type(response))

    async def get_head(self, key: str, nb_bytes: int) -> bytes:
        validate_key(key)
        validate_nb_bytes(nb_bytes)
        if nb_bytes == 0:  # no byte range can ask for nothing: just make sure the object exists
            await self.head(key)
            return b""
        response = await self._send("GET", key, what="GetObject", headers={"range": f"bytes=0-{nb_bytes - 1}"})
        if response.status_code in (200, 206):
            return response.content[:nb_bytes]
        if response.status_code == 416:  # the object exists and is empty
            return b""
        raise self._failure(response, what="GetObject", key=key)

    async def head(self, key: str) -> ObjectInfo:
        validate_key(key)
        response = await self._send("HEAD", key, what="HeadObject")
        if response.status_code != 200:
            raise self._failure(response, what="HeadObject", key=key)
        try:
            size = int(response.headers["content-length"])
        except (KeyError, ValueError):
            raise StorageUnavailable(f"S3 HeadObject on bucket {self.bucket!r} answered without a usable Content-Length") from None
        return ObjectInfo(key=key, size=size, content_type=_content_type(response))

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._delete_raw(key)

    async def delete_prefix(self, prefix: str) -> int:
        validate_key(prefix)
        keys = await self._all_keys(prefix)
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def delete_one(key: str) -> None:
            async with gate:
                await self._delete_raw(key)

        outcomes = await asyncio.gather(*(delete_one(key) for key in keys), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(keys)

    async def list_keys(self, prefix: str) -> list[str]:
        validate_key(prefix)
        valid: list[str] = []
        for key in await self._all_keys(prefix):
            try:
                valid.append(validate_key(key))
            except ValueError:
                continue  # written by another tool under a name this store never gives out
        return sorted(valid)

    async def check(self) -> None:
        await self._list_page("", None, max_keys=1)

    def presigned_get_url(self, key: str, *, expires_seconds: int, response_headers: Sequence[tuple[str, str]] = ()) -> str:
        """A SigV4 presigned GET of one object, valid ``expires_seconds`` (``response_headers``: S3's response-* overrides,
        signed with it). Used by the platform's storage links (files/links.py)."""
        from pipelex_server.storage.presign import presigned_query

        validate_key(key)
        path = f"{self._bucket_path}/{uri_encode(key, keep_slash=True)}"
        query = presigned_query(
            method="GET",
            host=self._host,
            canonical_uri=path,
            credentials=self._credentials,
            region=self.region,
            expires_seconds=expires_seconds,
            extra=response_headers,
        )
        return f"{self._origin}{path}?{query}"

    async def close(self) -> None:
        await self._client.aclose()
