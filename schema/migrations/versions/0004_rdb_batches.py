"""rdb_batches: the stored reply of each committed batch, for exactly-once redelivery.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import DATETIME, MEDIUMBLOB

from schema import ddl

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not ddl.has_table("rdb_batches"):
        op.create_table(
            "rdb_batches",
            sa.Column("batch_id", sa.String(64), primary_key=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("reply", MEDIUMBLOB(), nullable=False),
            sa.Column("created_at", DATETIME(fsp=6), nullable=False),
            mysql_engine="InnoDB",
        )
    ddl.create_index_if_missing("rdb_batches", "rdb_batches_created_at", ["created_at"])


def downgrade() -> None:
    if ddl.has_table("rdb_batches"):
        op.drop_table("rdb_batches")
