"""Table definitions, portable across SQLite and PostgreSQL (one migration tree)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the dialect keeps (SQLite keeps naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A run has two ids: ``public_id``, the id its caller names it by (chosen by the caller or generated), unique per
# caller; and ``id``, the server-wide key every other table, the event stream and Temporal know it by. Runs created
# before revision 0003 keep ``id == public_id``; later runs get a random key (runs/ids.py).
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("caller_id", sa.String(128), nullable=False),
    sa.Column("public_id", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("pipe_code", sa.String(512)),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("started_at", UtcDateTime),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("main_stuff_name", sa.String(256)),
    sa.Column("output", sa.JSON),
    sa.Column("output_url", sa.String(1024)),
    sa.Column("error", sa.JSON),
    sa.Column("usage", sa.JSON),
    sa.Column("crate_fingerprint", sa.String(128)),  # a completed run's library crate, as the runtime fingerprints it (0004)
    sa.Column("workflow_id", sa.String(256)),
    sa.Column("callbacks", sa.JSON),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_expires_at", UtcDateTime),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    # POST .../callbacks/redeliver calls granted so far (at most CALLBACK_MAX_REDELIVERIES)
    sa.Column("redeliveries", sa.Integer, nullable=False, default=0, server_default="0"),
    # the catalog method a run ran (`method_id` on the run routes) and which version of it: "3" or "draft" (0007)
    sa.Column("method_id", sa.String(64)),
    sa.Column("method_version", sa.String(16)),
    sa.Index("ix_runs_caller_created", "caller_id", "created_at"),
    sa.Index("ix_runs_state_lease", "state", "lease_expires_at"),
    sa.Index("ux_runs_caller_public", "caller_id", "public_id", unique=True),
    sa.Index("ix_runs_caller_state", "caller_id", "state"),
    sa.Index("ix_runs_caller_method", "caller_id", "method_id", "created_at"),
)

run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("run_id", sa.String(128), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(128), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False, default=8),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.String(512)),
    sa.Column("delivered_at", UtcDateTime),
    sa.Column("next_attempt_at", UtcDateTime),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_expires_at", UtcDateTime),
    sa.Index("ix_deliveries_run", "run_id", "position"),
    sa.Index("ix_deliveries_due", "delivered_at", "next_attempt_at"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("caller_id", sa.String(128), nullable=False),
    sa.Column("key", sa.String(512), nullable=False),
    sa.Column("filename", sa.String(256)),
    sa.Column("content_type", sa.String(256), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_uploads_caller_created", "caller_id", "created_at"),
    sa.Index("ix_uploads_created", "created_at"),
)

# The finished steps of a run's top-level pipeline, so a retried run (Temporal mode) skips what already ran.
run_checkpoints = sa.Table(
    "run_checkpoints",
    metadata,
    sa.Column("run_id", sa.String(128), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("path", sa.String(512), primary_key=True),
    sa.Column("pipe_code", sa.String(512), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# AUTH_MODE=keys: a caller's API keys (0005). Only the SHA-256 of a secret is kept (``secret_hash``, unique: a request's
# key is found by it); ``prefix`` is the secret's first characters, shown in lists. Rotation replaces the hash in place;
# revocation deletes the row.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("caller_id", sa.String(128), nullable=False),
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("rotated_at", UtcDateTime),
    sa.Column("expires_at", UtcDateTime),
    sa.Column("last_used_at", UtcDateTime),
    sa.Index("ux_api_keys_secret_hash", "secret_hash", unique=True),
    sa.Index("ix_api_keys_caller_created", "caller_id", "created_at"),
)


# ---------------------------------------------------------------- the methods catalog (0007)
# A method is a caller's named draft (a method tree kept as the caller's blobs: tree path -> {sha256, size}) and its
# published versions, immutable and numbered from 1. ``updated_at`` is the draft's token: it moves on draft writes only.
methods = sa.Table(
    "methods",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("caller_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("input_data", sa.JSON),
    sa.Column("draft", sa.JSON),  # tree path -> {"sha256", "size"}; null for an empty draft
    sa.Column("draft_digest", sa.String(80)),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("latest_version", sa.Integer),
    sa.Column("deletion_state", sa.String(16)),  # pending, in_progress, failed; null for a live method
    sa.Column("deletion_job_id", sa.String(64)),
    sa.Index("ix_methods_caller_created", "caller_id", "created_at"),
)

method_versions = sa.Table(
    "method_versions",
    metadata,
    sa.Column("method_id", sa.String(64), sa.ForeignKey("methods.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("tree", sa.JSON, nullable=False),  # tree path -> {"sha256", "size"}
    sa.Column("tree_digest", sa.String(80), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("runner_version", sa.String(64)),
    sa.Column("crate_fingerprint", sa.String(128)),
    sa.Column("published_at", UtcDateTime, nullable=False),
    sa.Column("published_by", sa.String(128), nullable=False),
)

method_examples = sa.Table(
    "method_examples",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("method_id", sa.String(64), sa.ForeignKey("methods.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Column("input_revision", sa.Integer, nullable=False),
    sa.Column("latest_run_id", sa.String(128)),
    sa.Column("kept_by_assistant", sa.Boolean, nullable=False, default=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_method_examples_method_created", "method_id", "created_at"),
)

# The platform's file records (issue 14, revision 0006): the record a person sees of one stored object of a caller, an
# upload (both upload routes), a test file, or a file a run read or made (recorded once the run has ended, listed in
# ``file_runs``). ``uri`` is ``pipelex-storage://{key}``; several records may hold one key (an upload a run took).
files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("caller_id", sa.String(128), nullable=False),
    sa.Column("key", sa.String(512), nullable=False),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("original_name", sa.String(512), nullable=False),
    sa.Column("media_type", sa.String(256), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64)),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("role", sa.String(16)),
    sa.Column("surface", sa.String(32)),
    sa.Column("run_id", sa.String(128)),  # the public id of the run that made it (or took it inline)
    sa.Column("method_id", sa.String(128)),
    sa.Column("method_version", sa.String(16)),
    sa.Column("upload_id", sa.String(64)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_files_caller_created", "caller_id", "created_at"),
    sa.Index("ix_files_caller_key", "caller_id", "key"),
    sa.Index("ix_files_caller_run", "caller_id", "run_id"),
    sa.Index("ix_files_upload", "upload_id"),
)

# The runs whose files are recorded (one row per run, by its server-wide key), and the addresses each run took as
# inputs (a file's uses).
file_runs = sa.Table(
    "file_runs",
    metadata,
    sa.Column("run_key", sa.String(128), primary_key=True),
    sa.Column("caller_id", sa.String(128), nullable=False),
    sa.Column("run_id", sa.String(128), nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
)

file_uses = sa.Table(
    "file_uses",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("caller_id", sa.String(128), nullable=False),
    sa.Column("key", sa.String(512), nullable=False),
    sa.Column("holder_type", sa.String(16), nullable=False),
    sa.Column("holder_id", sa.String(128), nullable=False),
    sa.Column("input_name", sa.String(256)),
    sa.Column("method_id", sa.String(128)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_file_uses_caller_key", "caller_id", "key"),
    sa.Index("ix_file_uses_holder", "caller_id", "holder_id"),
)
