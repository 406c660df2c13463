"""AWS Signature Version 4 for S3 requests (header-based, payload hashed)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    """An access key pair, with the session token of temporary credentials."""

    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, secret_key='***', session_token={'***' if self.session_token else None})"


def uri_encode(value: str, *, keep_slash: bool) -> str:
    """RFC 3986 percent-encoding as SigV4 wants it: unreserved characters kept, the rest as uppercase %XX of UTF-8."""
    return quote(value, safe="-_.~/" if keep_slash else "-_.~")


def canonical_query(params: Sequence[tuple[str, str]]) -> str:
    """The query string with names and values encoded, sorted by name then value."""
    encoded = sorted((uri_encode(name, keep_slash=False), uri_encode(value, keep_slash=False)) for name, value in params)
    return "&".join(f"{name}={value}" for name, value in encoded)


def payload_hash(payload: bytes) -> str:
    """The hex SHA-256 of the body, the value of x-amz-content-sha256."""
    return hashlib.sha256(payload).hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key for one day, region and service."""
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def sign(
    *,
    method: str,
    host: str,
    canonical_uri: str,
    query: str,
    headers: Mapping[str, str],
    body_sha256: str,
    credentials: Credentials,
    region: str,
    service: str = "s3",
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers to send: `headers` plus host, x-amz-date, x-amz-content-sha256, the session token and Authorization.

    `canonical_uri` is the already-encoded path and `query` the canonical query string (see `canonical_query`);
    the request must be sent with exactly that path and query. Every header returned is signed."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    signed: dict[str, str] = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = amz_date
    signed["x-amz-content-sha256"] = body_sha256
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
    signed_headers = ";".join(names)
    canonical_request = "\n".join([method.upper(), canonical_uri, query, canonical_headers, signed_headers, body_sha256])
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()])
    signature = hmac.new(
        signing_key(credentials.secret_key, date, region, service), string_to_sign.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    signed["authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
    return signed
