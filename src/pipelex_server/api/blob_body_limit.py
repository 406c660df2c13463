"""The request body limit, except for blob uploads: `PUT /v1/blobs/{sha256}` bounds its own body by the size its
signed target names and MAX_METHOD_TREE_FILE_KIB (which may pass MAX_REQUEST_BODY_MIB), after checking the target."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from pipelex_server.api.middleware import BodySizeLimitMiddleware

BLOB_UPLOAD_PREFIX = "/v1/blobs/"


def is_blob_upload(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "PUT" and scope["path"].startswith(BLOB_UPLOAD_PREFIX)


class BodyLimitExceptBlobUploads(BodySizeLimitMiddleware):
    """BodySizeLimitMiddleware for every request but a blob upload, which the route itself reads within its limit
    (so a refused upload target is answered before a byte of the body is read)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_blob_upload(scope):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
