"""afe_hosts.leased: the rdb's lease flag, indexed with locked for the availability scan.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

New hosts (and every host of an adopted database) start leased: the first release
cycle frees only those that are Ready with nothing running on them.
"""

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import TINYINT

from schema import ddl

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.add_column_if_missing(
        "afe_hosts",
        sa.Column("leased", TINYINT(display_width=1), nullable=False, server_default=sa.text("1")),
    )
    ddl.create_index_if_missing("afe_hosts", "hosts_leased_locked", ["leased", "locked"])


def downgrade() -> None:
    ddl.drop_index_if_present("afe_hosts", "hosts_leased_locked")
    ddl.drop_column_if_present("afe_hosts", "leased")
