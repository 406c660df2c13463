"""Uploads, and the checkpoints of runs' finished steps.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from pipelex_server.store.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("caller_id", sa.String(128), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("filename", sa.String(256)),
        sa.Column("content_type", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_uploads_caller_created", "uploads", ["caller_id", "created_at"])
    op.create_index("ix_uploads_created", "uploads", ["created_at"])
    op.create_table(
        "run_checkpoints",
        sa.Column("run_id", sa.String(128), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("path", sa.String(512), primary_key=True),
        sa.Column("pipe_code", sa.String(512), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("run_checkpoints")
    op.drop_index("ix_uploads_created", table_name="uploads")
    op.drop_index("ix_uploads_caller_created", table_name="uploads")
    op.drop_table("uploads")
