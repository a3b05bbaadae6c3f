"""Engines, transactions and the boundary between driver errors and ours.

Every batch runs in one short READ COMMITTED transaction with a short lock wait: a
worker that waits 50 s (MySQL's default) on a row lock outlives its client's timeout.
Deadlocks and lock-wait timeouts are normal under several workers; they retry the whole
transaction a bounded number of times, then become a DatabaseUnavailableError reply.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError

from rdb_client.exceptions import DatabaseUnavailableError, RDBException
from schema import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_WAIT_TIMEOUT_S = 3
CONNECT_TIMEOUT_S = 5
TRANSACTION_ATTEMPTS = 5
RETRY_BACKOFF_BASE_S = 0.02
# MySQL error codes: deadlock, lock wait timeout, and duplicate key: the only insert the
# rdb makes is a batch's stored reply, which collides only when two workers ran the same
# redelivered batch at once; on retry the loser finds the winner's reply and returns it.
RETRYABLE_ERRNOS = frozenset({1213, 1205, 1062})
# Server gone, lost connection, can't connect, server shutting down, too many connections.
UNAVAILABLE_ERRNOS = frozenset({2002, 2003, 2006, 2013, 2055, 1040, 1053, 1927})


class SchemaRevisionError(RDBException):
    """The database is not at the schema revision this code was written for."""


def make_engine(db_url: str, *, lock_wait_timeout_s: int = LOCK_WAIT_TIMEOUT_S, pool_size: int = 2) -> Engine:
    engine = create_engine(
        db_url,
        isolation_level="READ COMMITTED",
        pool_pre_ping=True,
        pool_recycle=3600,
        pool_size=pool_size,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )

    @event.listens_for(engine, "connect")
    def _session_settings(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {int(lock_wait_timeout_s)}")
            cursor.execute("SET SESSION time_zone = '+00:00'")

    return engine


def mysql_errno(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", None)
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and mysql_errno(exc) in RETRYABLE_ERRNOS


def is_unavailable(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    return bool(exc.connection_invalidated) or mysql_errno(exc) in UNAVAILABLE_ERRNOS or (
        isinstance(exc, OperationalError) and mysql_errno(exc) is None
    )


def run_transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    attempts: int = TRANSACTION_ATTEMPTS,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run ``work`` in one transaction, retrying deadlocks and lock waits with a bound."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as connection:
                return work(connection)
        except DBAPIError as exc:
            if is_retryable(exc) and attempt < attempts:
                if on_retry is not None:
                    on_retry(attempt, exc)
                log.info("transaction attempt %d hit %s; retrying", attempt, exc.orig)
                time.sleep(RETRY_BACKOFF_BASE_S * (2 ** (attempt - 1)) * (1 + random.random()))
                continue
            if is_retryable(exc):
                raise DatabaseUnavailableError(
                    f"gave up after {attempts} attempts: {exc.orig}"
                ) from exc
            if is_unavailable(exc):
                raise DatabaseUnavailableError(f"database unreachable: {exc.orig}") from exc
            raise
    raise AssertionError("unreachable")


def check_schema(engine: Engine) -> str:
    """Refuse to serve a database the code was not written for; return its revision."""
    try:
        current = migrate.current_revision(engine)
    except DBAPIError as exc:
        raise DatabaseUnavailableError(f"cannot read the schema revision: {exc.orig}") from exc
    head = migrate.head_revision()
    if current != head:
        raise SchemaRevisionError(
            f"database is at schema revision {current or '(none: never upgraded)'}, this worker needs "
            f"{head}; run `rdb-schema upgrade --db-url URL` first"
        )
    return current
