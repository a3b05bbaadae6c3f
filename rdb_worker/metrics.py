"""Prometheus metrics and the liveness/readiness endpoints of one worker process.

Each Worker has its own CollectorRegistry (tests embed several workers in one process);
``serve`` exposes it with /healthz and /readyz on one port, for Prometheus, systemd
checks and Kubernetes probes alike.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9464
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.batches = Counter("rdb_batches", "Batches answered, by kind and outcome", ["kind", "outcome"], registry=r)
        self.requests = Counter("rdb_requests", "Requests in answered batches, by kind", ["kind"], registry=r)
        self.hosts_leased = Counter("rdb_hosts_leased", "Hosts leased by acquire batches", registry=r)
        self.unsatisfied = Counter("rdb_unsatisfied_requests", "Acquire requests that got no host", registry=r)
        self.hosts_released = Counter("rdb_hosts_released", "Hosts released (batches and release cycle)", registry=r)
        self.latency = Histogram("rdb_batch_duration_seconds", "Time to run a batch, by kind", ["kind"],
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.retries = Counter("rdb_transaction_retries", "Transactions retried after deadlock/lock wait", registry=r)
        self.redeliveries = Counter("rdb_redeliveries", "Batches delivered more than once", registry=r)
        self.duplicates = Counter("rdb_duplicate_batches", "Redelivered batches answered from the stored reply",
                                  registry=r)
        self.dead_lettered = Counter("rdb_dead_lettered", "Batches rejected to the dead-letter queue", ["reason"],
                                     registry=r)
        self.errors = Counter("rdb_errors", "Batch errors, by error type", ["type"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve(
    port: int,
    metrics: WorkerMetrics,
    live: Callable[[], tuple[bool, str]],
    ready: Callable[[], tuple[bool, str]],
    host: str = "0.0.0.0",
) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz (liveness) and /readyz (readiness) in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.startswith("/metrics"):
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                ok, why = live()
                self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
            elif self.path.startswith("/readyz"):
                ok, why = ready()
                self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
            else:
                self._send(404, b"try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:  # probes every few seconds: not log-worthy
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="rdb-metrics-http", daemon=True).start()
    log.info("metrics, /healthz and /readyz on port %d", server.server_address[1])
    return server
