"""Where things live in the object store. Every key starts with the caller's scope (one path segment).

- ``{scope}/runs/{run_id}/inputs/…``  inputs the server fetched for the run (content-addressed)
- ``{scope}/runs/{run_id}/assets/…``  inputs the runtime relocated (``data:`` URLs)
- ``{scope}/runs/{run_id}/output.json``  an output too large to inline in the run document
- ``{scope}/uploads/{upload_id}.{ext}``  uploaded files
- ``{scope}/blobs/{sha256[:2]}/{sha256}``  content-addressed blobs: method tree files, uploaded blobs (``blobs.py``)

Caller ids and run ids match ``[A-Za-z0-9_-]{1,128}``, so a key never escapes its scope.
"""

from __future__ import annotations

import mimetypes


def extension_for(content_type: str | None) -> str:
    """The file extension a stored object's key gets for its content type (``bin`` when there is none)."""
    if not content_type:
        return "bin"
    guessed = mimetypes.guess_extension(content_type, strict=False)
    return guessed.lstrip(".") if guessed else "bin"


def run_prefix(scope: str, run_id: str) -> str:
    return f"{scope}/runs/{run_id}"


def output_key(scope: str, run_id: str) -> str:
    return f"{run_prefix(scope, run_id)}/output.json"


def upload_key(scope: str, upload_id: str, extension: str) -> str:
    return f"{scope}/uploads/{upload_id}.{extension}"


def upload_prefix(scope: str) -> str:
    return f"{scope}/uploads"


def blob_key(scope: str, sha256: str) -> str:
    """A content-addressed blob of the caller (``sha256``: 64 lower-case hex digits, checked by the caller)."""
    return f"{scope}/blobs/{sha256[:2]}/{sha256}"
