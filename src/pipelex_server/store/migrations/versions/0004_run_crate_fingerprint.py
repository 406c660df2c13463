"""A completed run records the fingerprint of the library crate its method was loaded into.

Revision ID: 0004
Revises: 0003

The runtime fingerprints the crate (the meaning of the method's concepts and pipes, not its formatting); the
/execute answers carry it as `crate_fingerprint`, as the official server's do. A nullable column: existing runs,
failed runs and runs built from no crate have none. Added in place on both SQLite and PostgreSQL (no table is
recreated, see 0003).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("crate_fingerprint", sa.String(128)))


def downgrade() -> None:
    op.drop_column("runs", "crate_fingerprint")
