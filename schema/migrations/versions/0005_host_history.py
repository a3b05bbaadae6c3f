"""rdb_host_history: every lease, release and update the rdb performs, for debugging.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Written in the same transaction as the change it records, so the history never claims
a change that rolled back, nor misses one that committed.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import BIGINT, DATETIME

from schema import ddl

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not ddl.has_table("rdb_host_history"):
        op.create_table(
            "rdb_host_history",
            sa.Column("id", BIGINT(), primary_key=True, autoincrement=True),
            sa.Column("host_id", sa.Integer(), nullable=False),
            sa.Column("action", sa.String(16), nullable=False),
            sa.Column("field", sa.String(64), nullable=False),
            sa.Column("old_value", sa.Text(), nullable=True),
            sa.Column("new_value", sa.Text(), nullable=True),
            sa.Column("batch_id", sa.String(64), nullable=True),
            sa.Column("worker", sa.String(128), nullable=True),
            sa.Column("created_at", DATETIME(fsp=6), nullable=False),
            mysql_engine="InnoDB",
        )
    ddl.create_index_if_missing("rdb_host_history", "rdb_host_history_host", ["host_id", "created_at"])
    ddl.create_index_if_missing("rdb_host_history", "rdb_host_history_batch", ["batch_id"])
    ddl.create_index_if_missing("rdb_host_history", "rdb_host_history_created_at", ["created_at"])


def downgrade() -> None:
    if ddl.has_table("rdb_host_history"):
        op.drop_table("rdb_host_history")
