"""Runs belong to their caller: a per-caller public id beside the server-wide key, and a durable redelivery count.

Revision ID: 0003
Revises: 0002

Every existing run keeps its key, so its events, deliveries, checkpoints, stored objects and Temporal workflow stay
attached, and its public id becomes that key (what its caller already knows it by). No table is recreated: on
SQLite a recreated ``runs`` table would cascade-delete the events, deliveries and checkpoints that reference it
(foreign keys are on, and cannot be switched off inside the migration's transaction).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("public_id", sa.String(128), nullable=False, server_default=""))
    op.execute(sa.text("UPDATE runs SET public_id = id"))
    if op.get_bind().dialect.name != "sqlite":
        # the default only served the existing rows; SQLite cannot drop it without recreating the table (see above)
        op.alter_column("runs", "public_id", server_default=None)
    op.add_column("runs", sa.Column("redeliveries", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ux_runs_caller_public", "runs", ["caller_id", "public_id"], unique=True)
    op.create_index("ix_runs_caller_state", "runs", ["caller_id", "state"])


def downgrade() -> None:
    # runs created since keep their server-wide key as their id: two callers' runs of one public id stay apart
    op.drop_index("ix_runs_caller_state", table_name="runs")
    op.drop_index("ux_runs_caller_public", table_name="runs")
    op.drop_column("runs", "redeliveries")
    op.drop_column("runs", "public_id")
