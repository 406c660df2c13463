"""Our error classes and the one place that renders RFC 9457 problem documents.

Every failure that reaches a client goes through ``ApiProblem``: routes and services raise it (or the engine
translates a runtime error into it), and the app's exception handlers render it. Nothing else shapes errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://pipelex-server.dev/problems/"
MTHDS_TYPE_BASE = "https://mthds.ai/errors/"

# The codes the server raises itself: code -> (status, title, is a runtime-registry code).
# Registry codes keep the registry's status and title (a test checks them against the installed registry).
SERVER_CODES: dict[str, tuple[int, str, bool]] = {
    "auth.missing_credential": (401, "No credential was sent", True),
    "auth.invalid_credential": (401, "The credential was refused", True),
    "auth.credential_expired": (401, "The credential has expired", True),
    "request.too_large": (413, "The request exceeds a size limit", True),
    "request.malformed": (422, "The request body cannot be parsed", True),
    "request.invalid": (422, "The request does not match the route's schema", True),
    "request.idempotency_conflict": (409, "The idempotency key was used for a different request", True),
    "request.pipe_unspecified": (422, "No pipe is selected", True),
    "run.not_found": (404, "No such run", True),
    "run.cancelled": (409, "The run was cancelled by its caller", True),
    "run.already_ended": (409, "The run has already ended", True),
    "run.lost": (500, "The run's outcome is lost", True),
    "run.timed_out": (422, "The run passed its time limit", True),
    "runtime.unexpected": (500, "An unexpected error occurred", True),
    "input.reserved_key": (422, "An input uses a reserved key", False),
    "inference.not_configured": (503, "No inference backend is configured", False),
    "server.not_ready": (503, "The server is still starting", False),
    "route.not_found": (404, "No such route", False),
    "route.method_not_allowed": (405, "Method not allowed on this route", False),
    "callback.secret_missing": (422, "Callbacks need a signing secret", False),
    "callback.url_refused": (422, "A callback URL was refused", False),
    "callback.none": (409, "The run has no callbacks", False),
    "run.not_terminal": (409, "The run has not ended", False),
    "run.not_completed": (409, "The run has no output", False),
    "storage.unavailable": (503, "The object storage is unavailable", False),
    "temporal.unavailable": (503, "Temporal is unavailable", False),
    "run.output_external": (409, "The run's output is kept in object storage", False),
    "upload.not_found": (404, "No such upload", False),
    "upload.missing_file": (422, "The upload has no file", False),
    "input.url_unreachable": (422, "An input's URL could not be fetched", True),
    "input.too_large": (422, "An input exceeds a size limit", True),
    "input.file_type_unsupported": (422, "An input file's type is not supported here", True),
    "security.input_url_refused": (422, "A URL in the request was refused", True),
    "input.too_many_urls": (422, "The request carries too many URL inputs", False),
    "request.too_deeply_nested": (422, "The request nests too deeply", False),
    "request.invalid_text": (422, "The request holds text that is not valid Unicode", False),
    "request.invalid_header": (400, "A request header is malformed", False),
    "request.host_not_allowed": (400, "The Host header names a host this server does not serve", False),
    "request.origin_not_allowed": (403, "The request's Origin is not allowed", False),
    "auth.ambiguous_identity": (400, "The request names more than one caller", False),
    "run.too_many_active": (429, "Too many runs queued or running for this caller", False),
    "events.too_many_streams": (429, "Too many open event streams for this caller", False),
    "callback.redelivery_limit": (429, "The run's callbacks were redelivered too many times", False),
    "metrics.forbidden": (403, "This client may not read the metrics", False),
    "usage.invalid_window": (422, "The usage window is invalid", False),
    # the methods catalog (catalog/, docs/platform.md), raised on the run routes too (`method_id`)
    "pipelex.catalog.not_found": (404, "The saved method does not exist", True),
    "pipelex.catalog.not_published": (409, "The saved method has no published version", True),
    "pipelex.catalog.being_deleted": (409, "The saved method is being deleted", True),
    "pipelex.catalog.update_conflict": (409, "The saved method changed since it was read", True),
}


class ConfigurationError(ValueError):
    """Unsafe or incoherent configuration: the server refuses to boot."""


class ApiProblem(Exception):
    """A failure with a stable dotted ``code`` and an HTTP status, rendered as a problem document."""

    def __init__(
        self,
        *,
        status: int,
        code: str,
        detail: str,
        title: str | None = None,
        type_uri: str | None = None,
        headers: dict[str, str] | None = None,
        **members: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        known = SERVER_CODES.get(code)
        self.title = title or (known[1] if known else _title_for(status))
        self.type_uri = type_uri or (MTHDS_TYPE_BASE + code if known and known[2] else PROBLEM_TYPE_BASE + code)
        self.headers = headers or {}
        self.members = {key: value for key, value in members.items() if value is not None}

    def to_document(self, *, request_id: str | None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        document.update(self.members)
        document["request_id"] = request_id
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> ApiProblem:
        """Rebuild a problem stored on a run (so a replayed failure answers exactly as the first time)."""
        reserved = {"type", "title", "status", "detail", "code", "request_id"}
        members = {key: value for key, value in document.items() if key not in reserved}
        return cls(
            status=int(document.get("status") or 500),
            code=str(document.get("code") or "runtime.unexpected"),
            detail=str(document.get("detail") or ""),
            title=document.get("title"),
            type_uri=document.get("type"),
            **members,
        )


def _title_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def not_found(*, code: str, detail: str) -> ApiProblem:
    return ApiProblem(status=404, code=code, detail=detail)


def internal_error() -> ApiProblem:
    """A 500 that says nothing about internals; the traceback goes to the server log only."""
    return ApiProblem(
        status=500,
        code="runtime.unexpected",
        detail="The server hit an unexpected error. It has been logged; quote the request_id when reporting it.",
    )


def problem_response_bytes(problem: ApiProblem, *, request_id: str | None) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The serialized problem and its headers, for code paths below the framework (raw ASGI middleware)."""
    import json

    body = json.dumps(problem.to_document(request_id=request_id), ensure_ascii=False).encode()
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *[(name.lower().encode(), value.encode()) for name, value in problem.headers.items()],
    ]
    return body, headers


def validation_problem(validation_errors: Sequence[Mapping[str, Any]]) -> ApiProblem:
    """A request that failed schema validation (FastAPI's error list) as one problem document."""
    errors = []
    malformed = False
    for error in validation_errors:
        if error.get("type") == "json_invalid":
            malformed = True
        location = [str(part) for part in error.get("loc", ())]
        errors.append({"code": "request.invalid", "detail": str(error.get("msg")), "location": {"path": location}})
    if malformed:
        return ApiProblem(status=422, code="request.malformed", detail="The request body is not valid JSON.", errors=errors)
    reserved = [item for item in errors if "reserved key" in item["detail"]]
    if reserved:
        return ApiProblem(
            status=422, code="input.reserved_key", detail=reserved[0]["detail"].removeprefix("Value error, "), errors=reserved
        )
    return ApiProblem(status=422, code="request.invalid", detail="The request does not match the route's schema.", errors=errors)
