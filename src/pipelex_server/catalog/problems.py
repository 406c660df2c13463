"""The catalog's refusals, under the SDK's codes (`pipelex.catalog.*`); the platform routes complete them."""

from __future__ import annotations

from typing import Any

from pipelex_server.errors import ApiProblem

MAX_NAME_CHARS = 200


def not_found(method_id: str, *, what: str = "method", **params: Any) -> ApiProblem:
    return ApiProblem(
        status=404, code="pipelex.catalog.not_found", detail=f"No {what} {method_id!r}.", params={"method_id": method_id, **params}
    )


def being_deleted(method_id: str) -> ApiProblem:
    return ApiProblem(
        status=409,
        code="pipelex.catalog.being_deleted",
        detail=f"The method {method_id!r} is being deleted.",
        params={"method_id": method_id},
    )


def update_conflict(method_id: str) -> ApiProblem:
    return ApiProblem(
        status=409,
        code="pipelex.catalog.update_conflict",
        detail=f"The draft of the method {method_id!r} changed since the token you sent: read it again.",
        params={"method_id": method_id},
    )


def not_published(method_id: str) -> ApiProblem:
    return ApiProblem(
        status=409,
        code="pipelex.catalog.not_published",
        detail=f"The method {method_id!r} has no published version: publish it, or run its draft as {method_id}@draft.",
        params={"method_id": method_id},
    )


def invalid(field: str, detail: str, **params: Any) -> ApiProblem:
    return ApiProblem(
        status=422, code="request.invalid", detail=detail, params={"field": field, **params}, location={"path": ["body", field]}
    )


def checked_name(name: Any, field: str = "name") -> str:
    """A method's or example's name: text of 1 to 200 characters, not blank."""
    if not isinstance(name, str) or not name.strip():
        raise invalid(field, f"`{field}` must be a non-blank text.")
    if len(name) > MAX_NAME_CHARS:
        raise invalid(field, f"`{field}` is longer than {MAX_NAME_CHARS} characters.", limit=MAX_NAME_CHARS)
    return name


def busy(method_id: str) -> ApiProblem:
    return ApiProblem(
        status=503,
        code="server.busy",
        detail=f"The method {method_id!r} kept changing under the write; nothing was written. Send it again.",
        params={"method_id": method_id},
        headers={"Retry-After": "1"},
    )
