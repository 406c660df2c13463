"""Limits on a request's inputs checked before any work is done: how many URL inputs one request may carry."""

from __future__ import annotations

from typing import Any

from pipelex_server.errors import ApiProblem


def _url_count(value: Any) -> int:
    """How many ``{"url": "..."}`` objects the JSON value holds, at any depth (iterative: deep nesting is fine)."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("url"), str):
                count += 1
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def url_count(inputs: dict[str, Any] | None) -> int:
    """How many URL inputs (``{"url": ...}``, a ``data:`` one too) the request's inputs hold."""
    return _url_count(inputs) if inputs else 0


def check_url_inputs(inputs: dict[str, Any] | None, *, max_urls: int) -> None:
    """422 ``input.too_many_urls`` naming the input that passes ``FETCH_MAX_URLS`` (counted over the whole request)."""
    if not inputs:
        return
    total = 0
    for name, value in inputs.items():
        total += _url_count(value)
        if total > max_urls:
            raise ApiProblem(
                status=422,
                code="input.too_many_urls",
                detail=(
                    f"Input {name!r} brings the request past {max_urls} URL inputs (FETCH_MAX_URLS): "
                    "send fewer documents or images per request."
                ),
                location={"path": ["body", "inputs", name]},
                params={"input": name, "limit": max_urls},
            )
