"""The catalog's rows in the SDK's wire shapes (`pipelex_sdk.product_models`): methods, summaries, versions, examples."""

from __future__ import annotations

from datetime import datetime
from typing import Any

INSTANT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso(value: datetime | None) -> str | None:
    """An instant as the catalog writes every one: UTC, always with microseconds, so a token reads back identically."""
    return value.strftime(INSTANT_FORMAT) if value is not None else None


def version_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": row["version"],
        "tree_digest": row["tree_digest"],
        "crate_fingerprint": row["crate_fingerprint"],
        "runner_version": row["runner_version"],
        "description": row["description"],
        "published_at": iso(row["published_at"]),
        "published_by": row["published_by"],
    }


def method_data(row: dict[str, Any], latest: dict[str, Any] | None) -> dict[str, Any]:
    """`MethodData`: identity, the draft's token and digest, the latest published version's summary."""
    return {
        "method_id": row["id"],
        "name": row["name"],
        "org_id": row["caller_id"],
        "created_by_user_id": row["created_by"],
        "description": row["description"],
        "deletion_state": row["deletion_state"],
        "input_data": row["input_data"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "draft_digest": row["draft_digest"],
        "latest_version": row["latest_version"],
        "latest_published": version_summary(latest) if latest else None,
    }


def method_summary(row: dict[str, Any], latest: dict[str, Any] | None) -> dict[str, Any]:
    """`MethodSummary`: a row of the index (no token, no files)."""
    return {
        "method_id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "created_at": iso(row["created_at"]),
        "deletion_state": row["deletion_state"],
        "latest_version": row["latest_version"],
        "latest_published": version_summary(latest) if latest else None,
        "draft_digest": row["draft_digest"],
    }


def example_view(row: dict[str, Any]) -> dict[str, Any]:
    """`MethodExample`, read strictly by the SDK: every member present, `latest_run_id` null when none."""
    return {
        "example_id": row["id"],
        "method_id": row["method_id"],
        "name": row["name"],
        "inputs": row["inputs"],
        "input_revision": row["input_revision"],
        "latest_run_id": row["latest_run_id"],
        "created_by_user_id": row["created_by"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "kept_by_assistant": bool(row["kept_by_assistant"]),
    }
