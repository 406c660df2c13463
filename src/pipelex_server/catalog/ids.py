"""Catalog ids (`mt_…` methods, `ex_…` examples) and method selectors, with the grammar the SDK's
`parse_method_selector` uses: `mt_` then letters, digits, `_` or `-`, optionally `@<n>` (n from 1, no leading zero)
or `@draft`."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Literal

from pipelex_server.errors import ApiProblem

METHOD_ID_PATTERN = re.compile(r"mt_[A-Za-z0-9_-]{1,60}")
EXAMPLE_ID_PATTERN = re.compile(r"ex_[A-Za-z0-9_-]{1,60}")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
DRAFT = "draft"


def new_method_id() -> str:
    return "mt_" + secrets.token_hex(12)


def new_example_id() -> str:
    return "ex_" + secrets.token_hex(12)


def new_job_id() -> str:
    return "del_" + secrets.token_hex(12)


@dataclass(frozen=True)
class Selector:
    """A method selector: the bare id and the version it names (None = the latest published one)."""

    method_id: str
    version: int | Literal["draft"] | None

    @property
    def label(self) -> str | None:
        """How a run records the version it ran ("3", "draft"); None for a bare id until it is resolved."""
        return None if self.version is None else str(self.version)


def selector_problem(value: str, field: str, reason: str) -> ApiProblem:
    shown = value if len(value) <= 80 else value[:80] + "..."
    return ApiProblem(
        status=422,
        code="request.invalid",
        detail=f"{shown!r} is not a method selector: mt_ followed by letters, digits, _ or -, then optionally @<version> or @draft.",
        params={"field": field, "reason": reason},
        location={"path": ["body", field]},
    )


def parse_selector(value: str, *, field: str = "method_id") -> Selector:
    """Split `mt_x`, `mt_x@3` or `mt_x@draft`; a 422 `request.invalid` naming ``field`` for anything else."""
    method_id, separator, suffix = value.partition("@")
    if METHOD_ID_PATTERN.fullmatch(method_id) is None:
        raise selector_problem(value, field, "not_a_catalog_id")
    if not separator:
        return Selector(method_id, None)
    if suffix == DRAFT:
        return Selector(method_id, DRAFT)
    if _VERSION.fullmatch(suffix) is None:
        raise selector_problem(value, field, "not_a_version")
    return Selector(method_id, int(suffix))
