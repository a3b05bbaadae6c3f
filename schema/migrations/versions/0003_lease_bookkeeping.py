"""Who leased a host and when, why it is locked, and which suite a job belongs to.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

leased_at lets the release cycle keep its hands off a lease younger than its grace
period; leased_by (the batch id) tells an operator which batch holds a host.
"""

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import DATETIME

from schema import ddl

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.add_column_if_missing("afe_hosts", sa.Column("leased_by", sa.String(64), nullable=True))
    ddl.add_column_if_missing("afe_hosts", sa.Column("leased_at", DATETIME(fsp=6), nullable=True))
    ddl.add_column_if_missing("afe_hosts", sa.Column("lock_reason", sa.Text(), nullable=True))
    ddl.add_column_if_missing("afe_jobs", sa.Column("parent_job_id", sa.Integer(), nullable=True))
    ddl.create_index_if_missing("afe_jobs", "afe_jobs_parent_job_id", ["parent_job_id"])


def downgrade() -> None:
    ddl.drop_index_if_present("afe_jobs", "afe_jobs_parent_job_id")
    ddl.drop_column_if_present("afe_jobs", "parent_job_id")
    for column in ("lock_reason", "leased_at", "leased_by"):
        ddl.drop_column_if_present("afe_hosts", column)
