"""Private RabbitMQ / MariaDB instances from the Debian packages: real servers, no mocks.

Servers run as the current user (not the packages' rabbitmq/mysql users), so
pytest's 0700 tmp dirs are fine as base dirs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import sqlalchemy as sa

from rdb_worker.devservers import PrivateMariaDB, PrivateRabbitMQ, free_port, main

pytestmark = pytest.mark.skipif(
    shutil.which("mariadbd") is None or not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists(),
    reason="needs the Debian rabbitmq-server and mariadb-server packages",
)

QUORUM = {"x-queue-type": "quorum"}
QUORUM_SETTLE_S = 2.0


@pytest.fixture
def base_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def rabbit(base_dir: Path) -> Iterator[PrivateRabbitMQ]:
    node = PrivateRabbitMQ(base_dir)
    yield node
    node.destroy()


@pytest.fixture
def maria(base_dir: Path) -> Iterator[PrivateMariaDB]:
    server = PrivateMariaDB(base_dir)
    yield server
    server.destroy()


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) that listen on `port`."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


IPV4_LOOPBACK_HEX = "0100007F"
IPV6_LOOPBACK_HEX = "00000000000000000000000001000000"


def _get_body(url: str, queue: str) -> bytes | None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        _method, _props, body = connection.channel().basic_get(queue, auto_ack=True)
        return body
    finally:
        connection.close()


def _declare(url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_declare(queue, durable=True, arguments=QUORUM)
    finally:
        connection.close()


def _publish(url: str, queue: str, body: bytes) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=True, arguments=QUORUM)
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        connection.close()


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_rabbitmq_quorum_queue_and_restart_on_same_port(rabbit: PrivateRabbitMQ) -> None:
    t0 = time.monotonic()
    rabbit.start()
    print(f"RabbitMQ start: {time.monotonic() - t0:.1f} s")
    assert rabbit.amqp_url == f"amqp://rdb:rdbpass@127.0.0.1:{rabbit.port}/%2F"
    for port in (rabbit.port, rabbit.dist_port, rabbit.epmd_port):
        assert _listeners(port), f"nothing listens on {port}"
        assert _listeners(port) <= {IPV4_LOOPBACK_HEX, IPV6_LOOPBACK_HEX}, f"port {port} not loopback-only"

    _publish(rabbit.amqp_url, "devservers.q", b"first")
    assert _get_body(rabbit.amqp_url, "devservers.q") == b"first"
    _publish(rabbit.amqp_url, "devservers.q", b"kept across restart")
    queues = rabbit.ctl("list_queues", "name", "type")
    assert "devservers.q\tquorum" in queues

    port = rabbit.port
    rabbit.stop()
    assert not rabbit.is_running()
    t0 = time.monotonic()
    rabbit.start()
    print(f"RabbitMQ restart: {time.monotonic() - t0:.1f} s")
    assert rabbit.port == port
    assert _get_body(rabbit.amqp_url, "devservers.q") == b"kept across restart"


@pytest.mark.slow
def test_rabbitmq_kill_then_start(rabbit: PrivateRabbitMQ) -> None:
    rabbit.start()
    _declare(rabbit.amqp_url, "devservers.crash")
    # RabbitMQ 3.10.8 quirk: a quorum queue SIGKILLed within ~1 s of its declaration
    # comes back without a leader (basic.get times out after 60 s). Fault tests must
    # let a new queue settle before killing the broker.
    time.sleep(QUORUM_SETTLE_S)
    _publish(rabbit.amqp_url, "devservers.crash", b"confirmed before the crash")
    rabbit.kill()
    assert not rabbit.is_running()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.URLParameters(rabbit.amqp_url + "?connection_attempts=1"))
    rabbit.start()
    assert _get_body(rabbit.amqp_url, "devservers.crash") == b"confirmed before the crash"


def test_rabbitmq_bad_config_fails_with_log_tail(base_dir: Path) -> None:
    node = PrivateRabbitMQ(base_dir, name="broken", extra_config={"listeners.tcp.2": "not-an-address"})
    try:
        with pytest.raises(RuntimeError, match="exited during startup") as info:
            node.start(timeout_s=60.0)
        assert "server.out" in str(info.value)
        assert "failed_to_prepare_configuration" in str(info.value)
        assert not node.is_running()
    finally:
        node.destroy()


def test_rabbitmq_startup_deadline_kills_node(base_dir: Path) -> None:
    node = PrivateRabbitMQ(base_dir, name="late")
    try:
        with pytest.raises(RuntimeError, match="not ready after 0.5 s"):
            node.start(timeout_s=0.5)
        assert not node.is_running()
        assert not _listeners(node.port)
    finally:
        node.destroy()


def test_mariadb_create_database_and_restart(maria: PrivateMariaDB) -> None:
    t0 = time.monotonic()
    maria.start()
    print(f"MariaDB first start (incl. install-db): {time.monotonic() - t0:.1f} s")
    assert maria.url == f"mysql+pymysql://rdb:rdbpass@127.0.0.1:{maria.port}/rdb"
    assert _listeners(maria.port) == {IPV4_LOOPBACK_HEX}

    url = maria.create_database("devservers_t1")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SHOW TABLES")).all() == []
        conn.execute(sa.text("CREATE TABLE t (id INT PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    engine.dispose()

    # The rdb user itself may create databases (tests make one each).
    rdb_engine = sa.create_engine(maria.url, isolation_level="AUTOCOMMIT")
    with rdb_engine.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE devservers_by_rdb"))
        conn.execute(sa.text("DROP DATABASE devservers_by_rdb"))
    rdb_engine.dispose()

    port = maria.port
    maria.stop()
    assert not maria.is_running()
    t0 = time.monotonic()
    maria.start()
    print(f"MariaDB restart: {time.monotonic() - t0:.1f} s")
    assert maria.port == port
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM t")).scalars().all() == [1]
    engine.dispose()

    # create_database hands out an *empty* database even if the name was used before.
    engine = sa.create_engine(maria.create_database("devservers_t1"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW TABLES")).all() == []
    engine.dispose()


def test_mariadb_kill_then_start_keeps_committed_rows(maria: PrivateMariaDB) -> None:
    maria.start()
    engine = sa.create_engine(maria.url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE crash (id INT PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO crash VALUES (7)"))
    engine.dispose()
    maria.kill()
    assert not maria.is_running()
    maria.start()
    engine = sa.create_engine(maria.url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM crash")).scalars().all() == [7]
    engine.dispose()


def test_context_manager_destroys_folder(base_dir: Path) -> None:
    with PrivateMariaDB(base_dir, name="ctx") as server:
        assert server.is_running()
        folder = server.folder
        assert folder.is_dir()
    assert not server.is_running()
    assert not folder.exists()


def test_cli_bad_usage_exits_2() -> None:
    assert main([]) == 2
    assert main(["bogus"]) == 2
    assert main(["start", "--no-such-option"]) == 2


def test_cli_stop_defaults_to_dot_rdb_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["stop"]) == 1
    assert str(tmp_path / ".rdb-servers") in capsys.readouterr().err


@pytest.mark.slow
def test_cli_start_writes_env_and_stop_stops(base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli_dir = base_dir / "cli"
    try:
        assert main(["start", "--dir", str(cli_dir)]) == 0
        out = capsys.readouterr().out
        env: dict[str, str] = {}
        for line in (cli_dir / "env.sh").read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'")
        assert set(env) == {"RDB_AMQP_URL", "RDB_DB_URL"}
        assert env["RDB_AMQP_URL"] in out and env["RDB_DB_URL"] in out

        pika.BlockingConnection(pika.URLParameters(env["RDB_AMQP_URL"])).close()
        engine = sa.create_engine(env["RDB_DB_URL"])
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()

        # A second start on the same dir refuses instead of orphaning the first servers.
        assert main(["start", "--dir", str(cli_dir)]) == 1
    finally:
        assert main(["stop", "--dir", str(cli_dir), "--purge"]) == 0
    rabbit_port = int(env["RDB_AMQP_URL"].rsplit(":", 1)[1].split("/")[0])
    assert not _listeners(rabbit_port)
    assert not cli_dir.exists()


@pytest.mark.slow
def test_rabbitmq_three_node_cluster(base_dir: Path) -> None:
    seed = PrivateRabbitMQ(base_dir, name="n1")
    nodes = [seed]
    try:
        seed.start()
        for name in ("n2", "n3"):
            node = PrivateRabbitMQ(base_dir, name=name, cluster_with=seed)
            nodes.append(node)
            node.start()
        assert len({n.epmd_port for n in nodes}) == 1
        assert len({n.port for n in nodes}) == 3
        status = json.loads(seed.ctl("cluster_status", "--formatter", "json"))
        assert sorted(status["running_nodes"]) == sorted(n.node_name for n in nodes)

        _publish(nodes[2].amqp_url, "devservers.replicated", b"on three nodes")
        members = nodes[1].ctl("list_queues", "name", "members")
        assert all(n.node_name in members for n in nodes)

        # A member restarted on its own rejoins (no second join_cluster) and the queue survives.
        nodes[1].stop()
        nodes[1].start()
        assert _get_body(nodes[1].amqp_url, "devservers.replicated") == b"on three nodes"
    finally:
        for node in reversed(nodes):
            node.destroy()
    assert not _listeners(seed.epmd_port), "the shared epmd should go with the last node"


def test_cluster_members_need_distinct_names(base_dir: Path) -> None:
    seed = PrivateRabbitMQ(base_dir, name="same")
    with pytest.raises(ValueError, match="distinct names"):
        PrivateRabbitMQ(base_dir, name="same", cluster_with=seed)
    with pytest.raises(ValueError, match="epmd"):
        PrivateRabbitMQ(base_dir, name="other", cluster_with=seed, epmd_port=seed.epmd_port + 1)


def test_no_server_processes_left(base_dir: Path) -> None:
    """Runs last in this file: every earlier test cleaned up after itself."""
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(base_dir.parent) in cmdline and os.getpid() != int(entry.name):
                leftovers.append(cmdline[:200])
    assert leftovers == []
