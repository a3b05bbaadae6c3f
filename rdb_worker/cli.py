"""rdb-worker: run one worker, or a supervised pool of worker processes.

Secrets: the URLs come from --amqp-url/--db-url, from RDB_AMQP_URL/RDB_DB_URL, or from
files (--amqp-url-file/--db-url-file); the pool passes them to its children through the
environment, never on a command line that ``ps`` shows.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from rdb_client.exceptions import RDBException
from rdb_client.protocol import DEFAULT_MAX_REQUESTS, DEFAULT_QUEUE
from rdb_worker.handlers import DEFAULT_RELEASE_GRACE_S
from rdb_worker.housekeeping import (
    DEFAULT_HISTORY_RETENTION_S,
    DEFAULT_RELEASE_INTERVAL_S,
    DEFAULT_REPLY_RETENTION_S,
)
from rdb_worker.recording import DEFAULT_RECORD_MAX_AGE, DEFAULT_RECORD_MAX_BYTES
from rdb_worker.transport import DEFAULT_DELIVERY_LIMIT, DEFAULT_PREFETCH_COUNT

log = logging.getLogger("rdb_worker")

RESTART_BACKOFF_MAX_S = 30.0
HEALTHY_RUN_S = 30.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rdb-worker", description="Serve rdb batches from RabbitMQ against MySQL.")
    p.add_argument("--amqp-url", help="broker URL(s), comma-separated for a cluster (default: $RDB_AMQP_URL)")
    p.add_argument("--amqp-url-file", type=Path, help="read the broker URL from this file")
    p.add_argument("--db-url", help="SQLAlchemy URL mysql+pymysql://user:pw@host:port/db (default: $RDB_DB_URL)")
    p.add_argument("--db-url-file", type=Path, help="read the database URL from this file")
    p.add_argument("--queue", default=DEFAULT_QUEUE, help="request queue name; every other broker name derives from it")
    p.add_argument("--processes", type=int, default=1, help="worker processes to run and supervise (default 1)")
    p.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH_COUNT, help="unacked batches per worker")
    p.add_argument("--delivery-limit", type=int, default=DEFAULT_DELIVERY_LIMIT,
                   help="deliveries before a batch is dead-lettered (fixed at the queue's first declare)")
    p.add_argument("--release-grace-s", type=float, default=DEFAULT_RELEASE_GRACE_S,
                   help="leases younger than this are never released (default 60)")
    p.add_argument("--release-interval-s", type=float, default=DEFAULT_RELEASE_INTERVAL_S,
                   help="how often the pool releases idle hosts (one worker at a time); 0 disables")
    p.add_argument("--reply-retention-s", type=float, default=DEFAULT_REPLY_RETENTION_S,
                   help="how long stored replies answer redelivered batches")
    p.add_argument("--history-retention-s", type=float, default=DEFAULT_HISTORY_RETENTION_S,
                   help="how long lease/release/update history is kept (pruned in bounded steps)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve /metrics, /healthz and /readyz on this port (with --processes N: port, port+1, ...)")
    p.add_argument("--no-record", dest="record", action="store_false",
                   help="do not record batches and replies to the record stream (rdb-replay reads it)")
    p.add_argument("--record-max-age", default=DEFAULT_RECORD_MAX_AGE,
                   help="record stream retention by age, RabbitMQ units: 7D, 12h (fixed at first declare)")
    p.add_argument("--record-max-bytes", type=int, default=DEFAULT_RECORD_MAX_BYTES,
                   help="record stream retention by size in bytes (fixed at first declare)")
    p.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS, help="largest batch accepted")
    p.add_argument("--log-level", default=os.environ.get("RDB_LOG_LEVEL", "INFO"))
    return p


def _secret(value: str | None, path: Path | None, env: str) -> str | None:
    if path is not None:
        return path.read_text().strip()
    return value or os.environ.get(env)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
    )
    # pika logs every socket event at INFO; our own lines already say what matters.
    logging.getLogger("pika").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        amqp_url = _secret(args.amqp_url, args.amqp_url_file, "RDB_AMQP_URL")
        db_url = _secret(args.db_url, args.db_url_file, "RDB_DB_URL")
    except OSError as exc:
        print(f"rdb-worker: {exc}", file=sys.stderr)
        return 2
    if not amqp_url or not db_url:
        print("rdb-worker: need a broker and a database: --amqp-url/--db-url or RDB_AMQP_URL/RDB_DB_URL",
              file=sys.stderr)
        return 2
    if args.processes < 1:
        print("rdb-worker: --processes must be >= 1", file=sys.stderr)
        return 2
    if args.processes > 1:
        return supervise(args, amqp_url, db_url)
    return run_one(args, amqp_url, db_url)


def run_one(args: argparse.Namespace, amqp_url: str, db_url: str) -> int:
    from rdb_worker.worker import Worker

    worker = Worker(
        amqp_url,
        db_url,
        queue=args.queue,
        prefetch_count=args.prefetch,
        delivery_limit=args.delivery_limit,
        release_grace_s=args.release_grace_s,
        max_requests=args.max_requests,
        release_interval_s=args.release_interval_s,
        reply_retention_s=args.reply_retention_s,
        history_retention_s=args.history_retention_s,
        metrics_port=args.metrics_port,
        record=args.record,
        record_max_age=args.record_max_age,
        record_max_bytes=args.record_max_bytes,
    )
    signals_seen = 0

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting now")
            os._exit(1)
        log.info("signal %d: finishing the current batch, then exiting", signum)
        worker.stop(timeout_s=0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker.run()
    except RDBException as exc:
        log.error("%s", exc)
        return 1
    return 0


def supervise(args: argparse.Namespace, amqp_url: str, db_url: str) -> int:
    """Keep ``--processes`` children alive; restart a dead one with backoff, and say so."""
    child_argv = [sys.executable, "-m", "rdb_worker.cli", "--processes", "1", "--queue", args.queue,
                  "--prefetch", str(args.prefetch), "--delivery-limit", str(args.delivery_limit),
                  "--release-grace-s", str(args.release_grace_s), "--max-requests", str(args.max_requests),
                  "--release-interval-s", str(args.release_interval_s),
                  "--reply-retention-s", str(args.reply_retention_s),
                  "--history-retention-s", str(args.history_retention_s),
                  "--record-max-age", args.record_max_age, "--record-max-bytes", str(args.record_max_bytes),
                  *([] if args.record else ["--no-record"]),
                  "--log-level", args.log_level]
    env = {**os.environ, "RDB_AMQP_URL": amqp_url, "RDB_DB_URL": db_url}
    children: list[subprocess.Popen[bytes] | None] = [None] * args.processes
    started_at = [0.0] * args.processes
    failures = [0] * args.processes
    next_start = [0.0] * args.processes
    stopping = False
    signals_seen = 0

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping, signals_seen
        signals_seen += 1
        stopping = True
        for child in children:
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGKILL if signals_seen > 1 else signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("supervising %d worker processes on queue %s", args.processes, args.queue)
    while not stopping:
        now = time.monotonic()
        for i, child in enumerate(children):
            if child is not None and child.poll() is not None:
                code = child.returncode
                ran_s = now - started_at[i]
                failures[i] = 0 if ran_s > HEALTHY_RUN_S else failures[i] + 1
                delay_s = min(RESTART_BACKOFF_MAX_S, 0.5 * 2 ** failures[i]) if failures[i] else 0.5
                log.warning("worker process %d (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                            i, child.pid, code, ran_s, delay_s)
                children[i] = None
                next_start[i] = now + delay_s
            if children[i] is None and now >= next_start[i] and not stopping:
                port_args = [] if args.metrics_port is None else ["--metrics-port", str(args.metrics_port + i)]
                # Own session: a terminal's Ctrl-C (sent to the whole process group) or
                # systemd's kill must reach the children once, through us; a second
                # signal would mean "exit now" to them.
                children[i] = subprocess.Popen(child_argv + port_args, env=env, start_new_session=True)
                started_at[i] = now
                log.info("started worker process %d (pid %d)", i, children[i].pid)  # type: ignore[union-attr]
        time.sleep(0.2)
    for child in children:
        if child is not None:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
    log.info("worker pool stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
