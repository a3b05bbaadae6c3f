"""The AFE tables the rdb serves, and the Alembic migrations that build or adopt them.

The table and column names are autotest's own (autotest_web, migrate_info 68), so an
existing autotest database can be brought to head with ``rdb-schema upgrade`` and served
as it is.
"""
