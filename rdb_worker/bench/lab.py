"""Servers, lab databases, and the worker processes the variants talk to.

Each lab size gets a database of its own, seeded once with ``seed_lab`` and reset (every
lease, status, dirty flag and stored reply undone) before every timed run, so every
variant starts from the same lab.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from rdb_client.sim import LabInfo, seed_lab
from rdb_worker.db import make_engine

log = logging.getLogger(__name__)

# Tables rows of which a tick leaves behind; cleared on reset when the schema has them.
SCRATCH_TABLES = ("rdb_batches", "rdb_host_history")
RESET_HOSTS = (
    "UPDATE afe_hosts SET leased = 0, leased_by = NULL, leased_at = NULL, status = 'Ready', dirty = 0 "
    "WHERE leased <> 0 OR status IS NULL OR status <> 'Ready' OR dirty <> 0"
)


@contextlib.contextmanager
def servers(amqp_url: str | None, db_url: str | None, base_dir: Path) -> Iterator[tuple[str, str]]:
    """The given servers, or private RabbitMQ and MariaDB under ``base_dir`` (removed after)."""
    if amqp_url and db_url:
        yield amqp_url, db_url
        return
    from rdb_worker.devservers import PrivateMariaDB, PrivateRabbitMQ

    base = base_dir / f"bench-{os.getpid()}"
    base.mkdir(parents=True, exist_ok=True)
    rabbit = PrivateRabbitMQ(base / "rabbitmq", name="bench")
    maria = PrivateMariaDB(base / "mariadb", name="bench")
    try:
        rabbit.start()
        maria.start()
        yield amqp_url or rabbit.amqp_url, db_url or maria.url
    finally:
        for server in (rabbit, maria):
            with contextlib.suppress(Exception):
                server.destroy()
        shutil.rmtree(base, ignore_errors=True)


def database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@dataclass
class BenchLab:
    """One seeded lab in a database of its own."""

    hosts: int
    name: str
    url: str
    info: LabInfo
    engine: Engine  # the harness's own (READ COMMITTED, like the worker's)

    def reset(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(RESET_HOSTS))
            for table in self._scratch:
                conn.execute(text(f"DELETE FROM `{table}`"))

    @property
    def _scratch(self) -> list[str]:
        if not hasattr(self, "_scratch_cache"):
            names = set(inspect(self.engine).get_table_names())
            self._scratch_cache = [t for t in SCRATCH_TABLES if t in names]
        return self._scratch_cache

    def leased_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM afe_hosts WHERE leased = 1")).scalar() or 0)

    def drop(self, admin_engine: Engine) -> None:
        self.engine.dispose()
        with admin_engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{self.name}`"))


def make_lab(admin_engine: Engine, admin_url: str, hosts: int, *, prefix: str, progress: bool) -> BenchLab:
    """Create, migrate and seed a database with ``hosts`` hosts."""
    from schema import migrate

    name = f"{prefix}_{hosts}"
    with admin_engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = database_url(admin_url, name)
    migrate.upgrade(url)
    seed_engine = create_engine(url)
    try:
        info = seed_lab(seed_engine, hosts=hosts, boards=20, pools=4, seed=0, progress=progress)
    finally:
        seed_engine.dispose()
    lab = BenchLab(hosts=hosts, name=name, url=url, info=info, engine=make_engine(url, pool_size=4))
    lab.reset()
    return lab


# --- processes --------------------------------------------------------------------------

def queue_consumers(amqp_url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def wait_for_consumers(amqp_url: str, queue: str, n: int, proc: subprocess.Popen[bytes] | None,
                       log_path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; log {log_path}:\n{_tail(log_path)}")
        try:
            if queue_consumers(amqp_url, queue) >= n:
                return
        except pika.exceptions.AMQPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no {n} consumer(s) on {queue} after {timeout_s} s; log {log_path}:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident set (VmHWM), in MiB."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self, timeout_s: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RDB_FAILPOINT"}
    env.update(extra)
    return env


def start_worker(amqp_url: str, db_url: str, queue: str, log_dir: Path) -> Process:
    """A real ``rdb-worker`` process (no release cycle: the harness resets the lab)."""
    log_path = log_dir / f"worker-{queue}-{uuid.uuid4().hex[:6]}.log"
    return Process(
        [sys.executable, "-m", "rdb_worker.cli", "--queue", queue, "--release-interval-s", "0",
         "--log-level", "WARNING"],
        _child_env(RDB_AMQP_URL=amqp_url, RDB_DB_URL=db_url),
        log_path,
    )


def start_celery_worker(amqp_url: str, admin_db_url: str, queue: str, log_dir: Path) -> Process:
    """A Celery worker (solo pool: one task at a time, like one rdb worker) on ``queue``."""
    log_path = log_dir / f"celery-{queue}.log"
    return Process(
        [sys.executable, "-m", "celery", "-A", "rdb_worker.bench.celery_app", "worker", "--pool", "solo",
         "--concurrency", "1", "-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
         "--loglevel", "WARNING", "--hostname", f"bench-{uuid.uuid4().hex[:6]}@%h"],
        _child_env(RDB_BENCH_AMQP_URL=amqp_url, RDB_BENCH_DB_URL=admin_db_url),
        log_path,
    )
