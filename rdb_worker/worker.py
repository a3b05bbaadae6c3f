"""One worker: an I/O thread that owns the broker connection, a batch thread that owns
the database work, and nothing shared between them but a queue and thread-safe callbacks.

Embeddable: ``Worker(...).start()`` runs it in the background (tests, benchmarks) and
``stop()`` drains it: the current batch finishes, its reply is sent and acked, then the
connection closes. ``run()`` is the same thing in the foreground (the CLI).
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import socket
import threading
import time
from collections.abc import Sequence
from http.server import ThreadingHTTPServer

from sqlalchemy import Engine

from rdb_client import protocol
from rdb_client.exceptions import BatchExpiredError, TransportError
from rdb_client.transport import mask_url
from rdb_client.protocol import DEFAULT_MAX_REQUESTS, DEFAULT_QUEUE, BrokerNames
from rdb_worker import failpoints, recording
from rdb_worker import metrics as metrics_mod
from rdb_worker.metrics import WorkerMetrics
from rdb_worker.db import check_schema, make_engine
from rdb_worker.dispatcher import Dispatcher, Outcome
from rdb_worker.handlers import DEFAULT_RELEASE_GRACE_S, Handlers
from rdb_worker.housekeeping import (
    DEFAULT_HISTORY_RETENTION_S,
    DEFAULT_RELEASE_INTERVAL_S,
    DEFAULT_REPLY_RETENTION_S,
    Housekeeper,
)
from rdb_worker.transport import (
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_PREFETCH_COUNT,
    Consumer,
    Delivery,
)

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_MAX_S = 10.0
LIVENESS_STALE_S = 60.0
READINESS_DB_CACHE_S = 2.0
START_TIMEOUT_S = 30.0


def log_outcome(outcome: Outcome) -> None:
    """One structured line per batch: grep by batch id (the client logs the same id)."""
    fields = [
        f"batch={outcome.batch_id}",
        f"kind={outcome.kind}",
        f"requests={outcome.requests}",
        *(f"{k}={v}" for k, v in outcome.stats.items()),
        f"duration_ms={outcome.duration_s * 1000:.1f}",
    ]
    if outcome.duplicate:
        fields.append("duplicate=1")
    if outcome.retries:
        fields.append(f"retries={outcome.retries}")
    if outcome.error:
        fields.append(f"error={outcome.error}")
    log.info("batch done %s", " ".join(fields))


class Worker:
    def __init__(
        self,
        amqp_url: str | Sequence[str],
        db_url: str,
        *,
        queue: str = DEFAULT_QUEUE,
        prefetch_count: int = DEFAULT_PREFETCH_COUNT,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        release_grace_s: float = DEFAULT_RELEASE_GRACE_S,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        release_interval_s: float = DEFAULT_RELEASE_INTERVAL_S,
        reply_retention_s: float = DEFAULT_REPLY_RETENTION_S,
        metrics_port: int | None = None,
        record: bool = True,
        record_max_age: str = recording.DEFAULT_RECORD_MAX_AGE,
        record_max_bytes: int = recording.DEFAULT_RECORD_MAX_BYTES,
        history_retention_s: float = DEFAULT_HISTORY_RETENTION_S,
        name: str | None = None,
    ) -> None:
        self.amqp_url = amqp_url
        self.db_url = db_url
        self.names = BrokerNames(queue)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self) & 0xFFFF:04x}"
        self.consumer = Consumer(
            amqp_url,
            self.names,
            prefetch_count=prefetch_count,
            delivery_limit=delivery_limit,
            record_arguments=recording.stream_arguments(record_max_age, record_max_bytes) if record else None,
        )
        self.history_retention_s = history_retention_s
        self.handlers = Handlers(release_grace_s=release_grace_s, worker_name=self.name)
        self.max_requests = max_requests
        self.release_interval_s = release_interval_s
        self.reply_retention_s = reply_retention_s
        self.housekeeper: Housekeeper | None = None
        self.metrics = WorkerMetrics()
        self.metrics_port = metrics_port
        self.http_server: ThreadingHTTPServer | None = None
        self.record = record
        self._engine: Engine | None = None
        self._revision: str | None = None
        self._last_io_tick = time.monotonic()
        self._batch_thread: threading.Thread | None = None
        self._db_ok_cache: tuple[float, bool, str] = (0.0, False, "not checked yet")
        self.ready = threading.Event()
        self.batches_done = 0
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._work: queue_mod.Queue[Delivery | None] = queue_mod.Queue()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_error: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------
    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Run in a background thread; return once consuming, or raise why it could not."""
        self._thread = threading.Thread(target=self._run_capturing, name=f"rdb-worker-io-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.ready.is_set():
            if self._start_error is not None:
                raise self._start_error
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise TransportError(f"worker did not start within {timeout_s} s")
            time.sleep(0.02)

    def _run_capturing(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
            self._start_error = exc
            log.error("worker %s stopped: %s", self.name, exc)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in hand, ack it, close; safe to call from any thread, twice."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # --- the I/O thread ------------------------------------------------------------------
    def run(self) -> None:
        engine = make_engine(self.db_url)
        try:
            revision = check_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        self._engine, self._revision = engine, revision
        dispatcher = Dispatcher(engine, self.handlers, max_requests=self.max_requests)
        batch_thread = threading.Thread(
            target=self._batch_loop, args=(dispatcher,), name=f"rdb-worker-db-{self.name}", daemon=True
        )
        self._batch_thread = batch_thread
        batch_thread.start()
        self.housekeeper = Housekeeper(
            engine,
            release_grace_s=self.handlers.release_grace_s,
            interval_s=self.release_interval_s,
            reply_retention_s=self.reply_retention_s,
            history_retention_s=self.history_retention_s,
            metrics=self.metrics,
            worker_name=self.name,
        )
        self.housekeeper.start()
        if self.metrics_port is not None:
            self.http_server = metrics_mod.serve(self.metrics_port, self.metrics, self.liveness, self.readiness)
        log.info(
            "worker %s serving queue %s on %s (schema %s)",
            self.name,
            self.names.queue,
            mask_url(self.amqp_url),
            revision,
        )
        backoff_s = 0.5
        try:
            while not self._stopping.is_set():
                self._last_io_tick = time.monotonic()
                if not self.consumer.connected:
                    try:
                        self.consumer.connect()
                        self.consumer.start_consuming(self._on_delivery)
                    except TransportError as exc:
                        if not self.ready.is_set() and "refused the topology" in str(exc):
                            raise
                        log.warning("worker %s: %s; retrying in %.1f s", self.name, exc, backoff_s)
                        self._stopping.wait(backoff_s)
                        backoff_s = min(backoff_s * 2, RECONNECT_BACKOFF_MAX_S)
                        continue
                    backoff_s = 0.5
                    self.ready.set()
                try:
                    self.consumer.process_events()
                except TransportError as exc:
                    log.warning("worker %s: %s; reconnecting", self.name, exc)
                    self.consumer.close()
            self._drain()
        finally:
            if self.http_server is not None:
                self.http_server.shutdown()
                self.http_server.server_close()
            self.housekeeper.stop()
            self._work.put(None)
            batch_thread.join(30)
            self.consumer.close()
            engine.dispose()
            self._stopped.set()
            log.info("worker %s stopped after %d batches", self.name, self.batches_done)

    def _drain(self) -> None:
        """Stop taking batches; keep the I/O loop turning until the one in hand is acked."""
        self.consumer.stop_consuming()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self._lock:
                idle = self._in_flight == 0
            if idle:
                break
            if not self.consumer.connected:
                break
            try:
                self.consumer.process_events()
            except TransportError:
                break
        # Let the final ack reach the socket.
        if self.consumer.connected:
            try:
                self.consumer.process_events(0)
            except TransportError:
                pass

    # --- health ---------------------------------------------------------------------------
    def liveness(self) -> tuple[bool, str]:
        """Alive: both threads run and the I/O loop turned recently (it turns every 0.1 s)."""
        if self._batch_thread is None or not self._batch_thread.is_alive():
            return False, "batch thread is not running"
        stale_s = time.monotonic() - self._last_io_tick
        if stale_s > LIVENESS_STALE_S and not self._stopping.is_set():
            return False, f"I/O loop stuck for {stale_s:.0f} s"
        return True, "alive"

    def readiness(self) -> tuple[bool, str]:
        """Ready: consuming from the broker, the database answers, schema at head."""
        if self._stopping.is_set():
            return False, "draining"
        if not self.consumer.connected:
            return False, "not connected to the broker"
        checked_at, ok, why = self._db_ok_cache
        if time.monotonic() - checked_at > READINESS_DB_CACHE_S and self._engine is not None:
            try:
                with self._engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                ok, why = True, f"ready (schema {self._revision})"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                ok, why = False, f"database unreachable: {exc.__class__.__name__}"
            self._db_ok_cache = (time.monotonic(), ok, why)
        return ok, why

    def _on_delivery(self, delivery: Delivery) -> None:
        with self._lock:
            self._in_flight += 1
        self._work.put(delivery)

    # --- the batch thread ---------------------------------------------------------------
    def _batch_loop(self, dispatcher: Dispatcher) -> None:
        while True:
            delivery = self._work.get()
            if delivery is None:
                return
            try:
                self._handle(dispatcher, delivery)
            finally:
                with self._lock:
                    self._in_flight -= 1

    def _handle(self, dispatcher: Dispatcher, delivery: Delivery) -> None:
        if delivery.expired():
            batch_id = delivery.message_id or delivery.correlation_id or ""
            log.warning("batch %s expired before it was run (client gave up); dead-lettering it", batch_id)
            error = protocol.encode_reply(
                batch_id, error=BatchExpiredError(f"batch {batch_id} expired before a worker could run it")
            )
            self.consumer.call_threadsafe(lambda: self.consumer.reject(delivery, requeue=False, reply=error))
            self.metrics.dead_lettered.labels("expired").inc()
            return
        reply, outcome = dispatcher.handle(delivery.body, fallback_batch_id=delivery.correlation_id)
        failpoints.hit("after_commit")
        if delivery.redelivered:
            outcome.stats["redelivered"] = 1
            outcome.stats["delivery_count"] = delivery.delivery_count
        log_outcome(outcome)
        self._count(outcome, delivery)
        self.batches_done += 1
        if self.record:
            self.consumer.call_threadsafe(lambda: self.consumer.record(delivery, reply, outcome.kind, self.name))
        if outcome.error and not delivery.reply_to:
            # Nobody to tell: keep the message for inspection instead of dropping it.
            self.consumer.call_threadsafe(lambda: self.consumer.reject(delivery, requeue=False))
            self.metrics.dead_lettered.labels("error_without_reply_to").inc()
            return
        self.consumer.call_threadsafe(lambda: self.consumer.finish(delivery, reply))

    def _count(self, outcome: Outcome, delivery: Delivery) -> None:
        m = self.metrics
        kind = outcome.kind or "unknown"
        m.batches.labels(kind, outcome.error or "ok").inc()
        m.requests.labels(kind).inc(outcome.requests)
        m.latency.labels(kind).observe(outcome.duration_s)
        m.retries.inc(outcome.retries)
        if outcome.error:
            m.errors.labels(outcome.error).inc()
        if delivery.redelivered:
            m.redeliveries.inc()
        if outcome.duplicate:
            m.duplicates.inc()
        m.hosts_leased.inc(outcome.stats.get("leased", 0) if kind == "acquire" else 0)
        m.unsatisfied.inc(outcome.stats.get("unsatisfied", 0))
        m.hosts_released.inc(outcome.stats.get("released", 0))

