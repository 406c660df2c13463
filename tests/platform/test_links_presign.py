"""SigV4 query presigning against AWS's published example, and the S3 backend's presigned links against a real bucket
(`weed mini`): the link reads the object, and a changed part of it is refused by the bucket."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from pipelex_server.storage.presign import presigned_query
from pipelex_server.storage.s3 import S3ObjectStore
from pipelex_server.storage.sigv4 import Credentials


def test_the_aws_documented_presigned_url_example() -> None:
    # "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)", example: GET examplebucket/test.txt
    query = presigned_query(
        method="GET",
        host="examplebucket.s3.amazonaws.com",
        canonical_uri="/test.txt",
        credentials=Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        region="us-east-1",
        expires_seconds=86400,
        now=datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert query.endswith("&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    assert "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request" in query
    with pytest.raises(ValueError):
        presigned_query(method="GET", host="h", canonical_uri="/k", credentials=Credentials("a", "b"), region="r", expires_seconds=0)


@pytest.mark.slow
async def test_a_presigned_link_reads_one_object_and_nothing_else(s3_server) -> None:
    bucket = f"presign-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    store = S3ObjectStore(bucket, s3_server.endpoint_url, "us-east-1", s3_server.access_key, s3_server.secret_key)
    try:
        await store.put("ann/uploads/a.txt", b"presigned", content_type="text/plain")
        await store.put("ann/uploads/b.txt", b"other", content_type="text/plain")
        headers = [("response-content-disposition", 'attachment; filename="nice.txt"')]
        url = store.presigned_get_url("ann/uploads/a.txt", expires_seconds=60, response_headers=headers)
        async with httpx.AsyncClient() as http:
            answer = await http.get(url)
            assert answer.status_code == 200 and answer.content == b"presigned"
            assert answer.headers.get("content-disposition") == 'attachment; filename="nice.txt"'
            for tampered in (
                url.replace("a.txt", "b.txt"),
                url.replace("X-Amz-Expires=60", "X-Amz-Expires=600"),
                url.replace("nice", "evil"),
            ):
                assert (await http.get(tampered)).status_code == 403
    finally:
        await store.close()
