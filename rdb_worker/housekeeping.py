"""The automatic release cycle, and pruning of stored replies, inside the worker pool.

Hosts must come back even when no scheduler is running, but one release at a time is
enough: each worker tries a MySQL named lock (GET_LOCK with no wait) every interval and
only the holder works. Named locks are server-wide, so the lock name carries the
database name: two rdb deployments on one MySQL server don't take turns.
"""

from __future__ import annotations

import logging
import threading
import uuid

from sqlalchemy import Engine, text

from rdb_worker import queries
from rdb_worker.db import run_transaction
from rdb_worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

DEFAULT_RELEASE_INTERVAL_S = 10.0
DEFAULT_REPLY_RETENTION_S = 24 * 3600.0
DEFAULT_HISTORY_RETENTION_S = 30 * 24 * 3600.0
PRUNE_BATCH_ROWS = 10_000


class Housekeeper:
    def __init__(
        self,
        engine: Engine,
        *,
        release_grace_s: float,
        interval_s: float = DEFAULT_RELEASE_INTERVAL_S,
        reply_retention_s: float = DEFAULT_REPLY_RETENTION_S,
        history_retention_s: float = DEFAULT_HISTORY_RETENTION_S,
        metrics: WorkerMetrics | None = None,
        worker_name: str = "rdb-worker",
    ) -> None:
        self.engine = engine
        self.history_retention_s = history_retention_s
        self.metrics = metrics
        self.worker_name = worker_name
        self.release_grace_s = release_grace_s
        self.interval_s = interval_s
        self.reply_retention_s = reply_retention_s
        self.lock_name = f"rdb.housekeeping.{engine.url.database}"
        self.cycles = 0
        self.released_total = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[int] | None:
        """One cycle; None when another worker holds the lock (it is doing the work)."""
        with self.engine.connect() as lock_conn:
            if not lock_conn.execute(text("SELECT GET_LOCK(:name, 0)"), {"name": self.lock_name}).scalar():
                return None
            try:
                actor = queries.Actor(batch_id=f"release-cycle:{uuid.uuid4().hex[:16]}", worker=self.worker_name)
                released = run_transaction(
                    self.engine, lambda conn: queries.release(conn, self.release_grace_s, actor)
                )
                pruned = run_transaction(
                    self.engine, lambda conn: queries.prune(conn, "rdb_batches", self.reply_retention_s, PRUNE_BATCH_ROWS)
                )
                pruned += run_transaction(
                    self.engine, lambda conn: queries.prune(conn, "rdb_host_history", self.history_retention_s, PRUNE_BATCH_ROWS)
                )
            finally:
                lock_conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": self.lock_name})
                lock_conn.commit()
        self.cycles += 1
        self.released_total += len(released)
        if self.metrics is not None:
            self.metrics.hosts_released.inc(len(released))
        if released or pruned:
            log.info("release cycle: released %d host(s) %s; pruned %d stored row(s)",
                     len(released), released[:20], pruned)
        return released

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - a DB outage must not end the cycle for good
                log.warning("release cycle failed: %s", exc)

    def start(self) -> None:
        if self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="rdb-housekeeping", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
