"""API keys (AUTH_MODE=keys).

Revision ID: 0005
Revises: 0004

A caller's API keys: only the SHA-256 of each secret is stored (unique, the lookup of a request's key), with the
secret's first characters as ``prefix``, an optional expiry, and the last use (written at most once a minute per key).
A revoked key's row is deleted. A new table, the same on SQLite and PostgreSQL.
"""

import sqlalchemy as sa
from alembic import op

from pipelex_server.store.tables import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("caller_id", sa.String(128), nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("rotated_at", UtcDateTime),
        sa.Column("expires_at", UtcDateTime),
        sa.Column("last_used_at", UtcDateTime),
    )
    op.create_index("ux_api_keys_secret_hash", "api_keys", ["secret_hash"], unique=True)
    op.create_index("ix_api_keys_caller_created", "api_keys", ["caller_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_caller_created", table_name="api_keys")
    op.drop_index("ux_api_keys_secret_hash", table_name="api_keys")
    op.drop_table("api_keys")
