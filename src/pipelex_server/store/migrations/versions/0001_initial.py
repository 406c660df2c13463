"""Runs and their events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from pipelex_server.store.tables import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("caller_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pipe_code", sa.String(512)),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("started_at", UtcDateTime),
        sa.Column("finished_at", UtcDateTime),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("main_stuff_name", sa.String(256)),
        sa.Column("output", sa.JSON),
        sa.Column("output_url", sa.String(1024)),
        sa.Column("error", sa.JSON),
        sa.Column("usage", sa.JSON),
        sa.Column("workflow_id", sa.String(256)),
        sa.Column("callbacks", sa.JSON),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_expires_at", UtcDateTime),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_runs_caller_created", "runs", ["caller_id", "created_at"])
    op.create_index("ix_runs_state_lease", "runs", ["state", "lease_expires_at"])
    op.create_table(
        "run_events",
        sa.Column("run_id", sa.String(128), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(128), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="8"),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.String(512)),
        sa.Column("delivered_at", UtcDateTime),
        sa.Column("next_attempt_at", UtcDateTime),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_expires_at", UtcDateTime),
    )
    op.create_index("ix_deliveries_run", "deliveries", ["run_id", "position"])
    op.create_index("ix_deliveries_due", "deliveries", ["delivered_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("run_events")
    op.drop_index("ix_runs_state_lease", table_name="runs")
    op.drop_index("ix_runs_caller_created", table_name="runs")
    op.drop_table("runs")
