"""SigV4 query presigning (a GET link to one object that needs no header, valid for a while): the S3 backend's links."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime

from pipelex_server.storage.sigv4 import ALGORITHM, Credentials, canonical_query, signing_key

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_EXPIRES_SECONDS = 7 * 24 * 3600  # SigV4's own bound on X-Amz-Expires


def presigned_query(
    *,
    method: str,
    host: str,
    canonical_uri: str,
    credentials: Credentials,
    region: str,
    expires_seconds: int,
    extra: Sequence[tuple[str, str]] = (),
    service: str = "s3",
    now: datetime | None = None,
) -> str:
    """The canonical query string of a presigned request (``extra``, e.g. response-content-disposition, signed with
    it); the request is sent to ``canonical_uri`` with exactly this query and only the host header."""
    if not 1 <= expires_seconds <= MAX_EXPIRES_SECONDS:
        raise ValueError(f"a presigned link lives 1 to {MAX_EXPIRES_SECONDS} seconds, not {expires_seconds}")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    params = [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{credentials.access_key}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires_seconds)),
        ("X-Amz-SignedHeaders", "host"),
        *extra,
    ]
    if credentials.session_token:
        params.append(("X-Amz-Security-Token", credentials.session_token))
    query = canonical_query(params)
    canonical_request = "\n".join([method.upper(), canonical_uri, query, f"host:{host}\n", "host", UNSIGNED_PAYLOAD])
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()])
    key = signing_key(credentials.secret_key, amz_date[:8], region, service)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{query}&X-Amz-Signature={signature}"
