"""The platform's file records, the runs whose files are recorded, and the addresses runs took (a file's uses).

Revision ID: 0006
Revises: 0005

New tables only, the same on SQLite and PostgreSQL. Uploads made before this revision have no file record; the
address of such a file still resolves to a link (``/v1/resolve-storage-url``) and reads as an empty ``by-uri`` list.
"""

import sqlalchemy as sa
from alembic import op

from pipelex_server.store.tables import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
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
        sa.Column("run_id", sa.String(128)),
        sa.Column("method_id", sa.String(128)),
        sa.Column("method_version", sa.String(16)),
        sa.Column("upload_id", sa.String(64)),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_files_caller_created", "files", ["caller_id", "created_at"])
    op.create_index("ix_files_caller_key", "files", ["caller_id", "key"])
    op.create_index("ix_files_caller_run", "files", ["caller_id", "run_id"])
    op.create_index("ix_files_upload", "files", ["upload_id"])
    op.create_table(
        "file_runs",
        sa.Column("run_key", sa.String(128), primary_key=True),
        sa.Column("caller_id", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "file_uses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("caller_id", sa.String(128), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("holder_type", sa.String(16), nullable=False),
        sa.Column("holder_id", sa.String(128), nullable=False),
        sa.Column("input_name", sa.String(256)),
        sa.Column("method_id", sa.String(128)),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_file_uses_caller_key", "file_uses", ["caller_id", "key"])
    op.create_index("ix_file_uses_holder", "file_uses", ["caller_id", "holder_id"])


def downgrade() -> None:
    op.drop_index("ix_file_uses_holder", table_name="file_uses")
    op.drop_index("ix_file_uses_caller_key", table_name="file_uses")
    op.drop_table("file_uses")
    op.drop_table("file_runs")
    op.drop_index("ix_files_upload", table_name="files")
    op.drop_index("ix_files_caller_run", table_name="files")
    op.drop_index("ix_files_caller_key", table_name="files")
    op.drop_index("ix_files_caller_created", table_name="files")
    op.drop_table("files")
