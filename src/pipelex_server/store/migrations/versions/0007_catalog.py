"""The methods catalog: methods (a caller's named draft), their published versions, their saved examples; and the
catalog method a run ran.

Revision ID: 0007
Revises: 0006

A method's draft and each version are method trees kept as the caller's blobs (tree path -> {sha256, size}), named
by their tree digest. Versions are immutable and numbered from 1 per method; the (method, version) key makes two
concurrent publishes write one version. Runs gain two nullable columns, ``method_id`` and ``method_version``
("3" or "draft"), added in place on SQLite and PostgreSQL (no table recreated, see 0003).
"""

import sqlalchemy as sa
from alembic import op

from pipelex_server.store.tables import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "methods",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("caller_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("input_data", sa.JSON),
        sa.Column("draft", sa.JSON),
        sa.Column("draft_digest", sa.String(80)),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("latest_version", sa.Integer),
        sa.Column("deletion_state", sa.String(16)),
        sa.Column("deletion_job_id", sa.String(64)),
    )
    op.create_index("ix_methods_caller_created", "methods", ["caller_id", "created_at"])
    op.create_table(
        "method_versions",
        sa.Column("method_id", sa.String(64), sa.ForeignKey("methods.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tree", sa.JSON, nullable=False),
        sa.Column("tree_digest", sa.String(80), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("runner_version", sa.String(64)),
        sa.Column("crate_fingerprint", sa.String(128)),
        sa.Column("published_at", UtcDateTime, nullable=False),
        sa.Column("published_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "method_examples",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("method_id", sa.String(64), sa.ForeignKey("methods.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("input_revision", sa.Integer, nullable=False),
        sa.Column("latest_run_id", sa.String(128)),
        sa.Column("kept_by_assistant", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_method_examples_method_created", "method_examples", ["method_id", "created_at"])
    op.add_column("runs", sa.Column("method_id", sa.String(64)))
    op.add_column("runs", sa.Column("method_version", sa.String(16)))
    op.create_index("ix_runs_caller_method", "runs", ["caller_id", "method_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_caller_method", table_name="runs")
    op.drop_column("runs", "method_version")
    op.drop_column("runs", "method_id")
    op.drop_index("ix_method_examples_method_created", table_name="method_examples")
    op.drop_table("method_examples")
    op.drop_table("method_versions")
    op.drop_index("ix_methods_caller_created", table_name="methods")
    op.drop_table("methods")
