"""Real servers for the test run: started once per session, torn down after.

Where the servers come from, in order:
1. RDB_TEST_AMQP_URL / RDB_TEST_DB_URL name existing servers (the DB user must be able
   to CREATE and DROP databases);
2. a reachable Docker engine: testcontainers starts RabbitMQ and MariaDB;
3. otherwise private RabbitMQ and MariaDB instances from the Debian packages, on free
   loopback ports, under .rdb-servers/ in the checkout.
Each test gets its own database (migrated to head) and its own queue name, so tests
never see each other's hosts or batches.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

REPO = Path(__file__).resolve().parent.parent


def _docker_reachable() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False


@contextlib.contextmanager
def _servers() -> Iterator[tuple[str, str]]:
    amqp_url = os.environ.get("RDB_TEST_AMQP_URL")
    db_url = os.environ.get("RDB_TEST_DB_URL")
    if amqp_url and db_url:
        yield amqp_url, db_url
        return
    if os.environ.get("RDB_TEST_USE_DOCKER", "1") != "0" and _docker_reachable():
        from testcontainers.mysql import MySqlContainer  # type: ignore[import-untyped]
        from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[import-untyped]

        with RabbitMqContainer("rabbitmq:3.10") as rabbit, MySqlContainer(
            "mariadb:10.11", username="root", password="rdbpass", dbname="rdb"
        ) as maria:
            amqp = f"amqp://guest:guest@{rabbit.get_container_host_ip()}:{rabbit.get_exposed_port(5672)}/%2F"
            yield amqp, maria.get_connection_url().replace("mysql://", "mysql+pymysql://")
        return
    from rdb_worker.devservers import PrivateMariaDB, PrivateRabbitMQ

    base = REPO / ".rdb-servers" / f"tests-{os.getpid()}"
    base.mkdir(parents=True, exist_ok=True)
    rabbit = PrivateRabbitMQ(base / "rabbitmq", name="tests")
    maria = PrivateMariaDB(base / "mariadb", name="tests")
    try:
        rabbit.start()
        maria.start()
        yield rabbit.amqp_url, maria.url
    finally:
        for server in (rabbit, maria):
            with contextlib.suppress(Exception):
                server.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    with _servers() as urls:
        yield urls


@pytest.fixture(scope="session")
def amqp_url(servers: tuple[str, str]) -> str:
    return servers[0]


@pytest.fixture(scope="session")
def admin_db_url(servers: tuple[str, str]) -> str:
    return servers[1]


@pytest.fixture(scope="session")
def admin_engine(admin_db_url: str) -> Iterator[Engine]:
    engine = create_engine(admin_db_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def empty_db_url(admin_engine: Engine, admin_db_url: str) -> Iterator[str]:
    """A brand-new empty database, dropped after the test."""
    name = f"rdbt_{uuid.uuid4().hex[:12]}"
    with admin_engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    yield make_url(admin_db_url).set(database=name).render_as_string(hide_password=False)
    with admin_engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """A fresh database at the schema's head revision."""
    from schema import migrate

    migrate.upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def queue_name() -> str:
    """A queue name of the test's own: its workers and clients meet nobody else's."""
    return f"rdb.test.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def start_worker(amqp_url: str, db_url: str, queue_name: str) -> Iterator[Callable[..., object]]:
    """Start embedded workers (threads in this process); all are stopped at teardown."""
    from rdb_worker.worker import Worker

    started: list[Worker] = []

    def start(**kwargs: object) -> Worker:
        kwargs.setdefault("queue", queue_name)
        kwargs.setdefault("db_url", db_url)
        kwargs.setdefault("amqp_url", amqp_url)
        # Tests that check release results call it themselves; a background cycle would race them.
        kwargs.setdefault("release_interval_s", 0)
        worker = Worker(**kwargs)  # type: ignore[arg-type]
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(timeout_s=10)


@pytest.fixture
def client(amqp_url: str, queue_name: str, start_worker: Callable[..., object]) -> Iterator[object]:
    """A client whose queue has one worker behind it."""
    from rdb_client import RDBClient

    start_worker()
    with RDBClient(amqp_url, timeout_s=20, queue=queue_name) as c:
        yield c
