"""Idempotent DDL steps for migrations.

MariaDB commits every DDL statement on its own, so a migration that failed half way has
left some of its changes behind. Every step here looks at the live catalogue first and
does only what is missing, which makes each migration safe to run again, and lets the
first one adopt an existing autotest database without touching its rows.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, inspect


def _inspector():  # type: ignore[no-untyped-def]
    return inspect(op.get_bind())


def has_table(name: str) -> bool:
    return _inspector().has_table(name)


def has_column(table: str, column: str) -> bool:
    return any(c["name"] == column for c in _inspector().get_columns(table))


def has_index(table: str, index: str) -> bool:
    return any(i["name"] == index for i in _inspector().get_indexes(table))


def add_column_if_missing(table: str, column: Column) -> None:  # type: ignore[type-arg]
    if not has_column(table, column.name):
        op.add_column(table, column)


def drop_column_if_present(table: str, column: str) -> None:
    if has_column(table, column):
        op.drop_column(table, column)


def create_index_if_missing(table: str, index: str, columns: list[str]) -> None:
    if not has_index(table, index):
        op.create_index(index, table, columns)


def drop_index_if_present(table: str, index: str) -> None:
    if has_index(table, index):
        op.drop_index(index, table_name=table)
