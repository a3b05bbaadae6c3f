"""From message body to reply body: decode, route to a handler, run one transaction.

The dispatcher never raises: every failure becomes an error reply, so a malformed or
unlucky batch can not take the worker down with it. Batches that change the database
store their reply in the same transaction (rdb_batches); a redelivery of a batch that
already committed is answered from there and changes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from rdb_client import protocol
from rdb_client.exceptions import BatchError, RDBException, WorkerError
from rdb_worker import failpoints, queries
from rdb_worker.db import run_transaction
from rdb_worker.handlers import Handlers

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to one batch: for the log line, metrics and tests."""

    batch_id: str | None
    kind: str | None
    requests: int = 0
    error: str | None = None
    duplicate: bool = False
    duration_s: float = 0.0
    retries: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        handlers: Handlers | None = None,
        *,
        max_requests: int = protocol.DEFAULT_MAX_REQUESTS,
        worker_name: str | None = None,
    ) -> None:
        self.engine = engine
        self.handlers = handlers or Handlers()
        self.max_requests = max_requests
        if worker_name is not None:
            self.handlers.worker_name = worker_name

    def handle(self, body: bytes, fallback_batch_id: str | None = None) -> tuple[bytes, Outcome]:
        """Answer one message body; ``fallback_batch_id`` (the message's correlation id)
        names the reply when the body is too broken to carry its own batch id."""
        started = time.monotonic()
        try:
            batch = protocol.decode_batch(body, max_requests=self.max_requests)
        except BatchError as exc:
            batch_id = protocol.peek_batch_id(body) or fallback_batch_id
            outcome = Outcome(batch_id=batch_id, kind=None, error=type(exc).__name__)
            log.warning("refused batch %s: %s", batch_id or "(no id)", exc)
            return protocol.encode_reply(batch_id or "", error=exc), outcome
        outcome = Outcome(batch_id=batch.batch_id, kind=batch.kind, requests=len(batch.requests))
        try:
            reply = self.run(batch, outcome)
        except RDBException as exc:
            outcome.error = type(exc).__name__
            log.warning("batch %s (%s) failed: %s", batch.batch_id, batch.kind, exc)
            reply = protocol.encode_reply(batch.batch_id, error=exc)
        except Exception as exc:  # noqa: BLE001 - a bug must become a reply, not a dead worker
            outcome.error = WorkerError.__name__
            log.exception("batch %s (%s) crashed the handler", batch.batch_id, batch.kind)
            reply = protocol.encode_reply(
                batch.batch_id, error=WorkerError(f"{type(exc).__name__}: {exc}")
            )
        outcome.duration_s = time.monotonic() - started
        return reply, outcome

    def run(self, batch: protocol.Batch, outcome: Outcome) -> bytes:
        """Run a decoded batch in one transaction (retried on deadlocks); return the reply."""
        if not batch.requests:
            return protocol.encode_reply(batch.batch_id, results=[], meta={"worker": self.handlers.worker_name})
        writes = batch.kind != "get"

        def work(conn: Connection) -> bytes:
            if writes:
                stored = queries.stored_reply(conn, batch.batch_id)
                if stored is not None:
                    outcome.duplicate = True
                    return stored
            results = self.handlers.run(conn, batch.kind, batch.batch_id, batch.requests)
            outcome.stats = dict(self.handlers.last_stats)
            reply = protocol.encode_reply(
                batch.batch_id, results=results, meta={"worker": self.handlers.worker_name, **outcome.stats}
            )
            if writes:
                queries.store_reply(conn, batch.batch_id, batch.kind, reply)
            failpoints.hit("before_commit")
            failpoints.hit("slow_batch")
            return reply

        def count_retry(_attempt: int, _exc: BaseException) -> None:
            outcome.retries += 1

        return run_transaction(self.engine, work, on_retry=count_retry)

