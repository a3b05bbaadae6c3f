"""Worker processes for fault tests: real ``rdb-worker`` processes we can SIGKILL."""

from __future__ import annotations

import os
import signal as signal_mod
import subprocess
import sys
import time
from pathlib import Path

import pika

from rdb_client.protocol import BrokerNames


class WorkerProcess:
    def __init__(self, amqp_url: str, db_url: str, queue: str, *, log_path: Path,
                 failpoint: str | None = None, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        child_env = {**os.environ, "RDB_AMQP_URL": amqp_url, "RDB_DB_URL": db_url, **(env or {})}
        child_env.pop("RDB_FAILPOINT", None)
        if failpoint:
            child_env["RDB_FAILPOINT"] = failpoint
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rdb_worker.cli", "--queue", queue, "--release-interval-s", "0", *extra_args],
            env=child_env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait(self, timeout_s: float = 30) -> int:
        return self.proc.wait(timeout_s)

    def signal(self, sig: signal_mod.Signals) -> None:
        self.proc.send_signal(sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def queue_state(amqp_url: str, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ok = conn.channel().queue_declare(queue, passive=True)
        return ok.method.message_count, ok.method.consumer_count
    finally:
        conn.close()


def wait_for(predicate, timeout_s: float = 30, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except pika.exceptions.AMQPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def wait_for_consumers(amqp_url: str, queue: str, n: int, timeout_s: float = 30) -> None:
    wait_for(lambda: queue_state(amqp_url, queue)[1] >= n, timeout_s, f"{n} consumer(s) on {queue}")


def dead_letters(amqp_url: str, queue: str) -> int:
    return queue_state(amqp_url, BrokerNames(queue).dead_letter_queue)[0]
