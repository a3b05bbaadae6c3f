"""Faults on real processes and servers: nothing lost, nothing leased twice.

Workers here are real ``rdb-worker`` processes, killed with SIGKILL at exact steps
(failpoints); the broker and MariaDB tests stop and start private instances of their own.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from rdb_client import AcquireHostRequest, RDBClient, RDBTimeoutError, UpdateHostRequest
from rdb_client.exceptions import DatabaseUnavailableError
from schema.tables import afe_hosts, rdb_batches
from tests.labkit import Lab
from tests.procs import WorkerProcess, dead_letters, queue_state, wait_for, wait_for_consumers

pytestmark = pytest.mark.slow


@pytest.fixture
def lab(engine) -> Lab:  # type: ignore[no-untyped-def]
    lab = Lab(engine)
    for i in range(6):
        lab.host(f"h{i}", ("board:eve",), ("acl",))
    return lab


@pytest.fixture
def workers(amqp_url: str, db_url: str, queue_name: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[WorkerProcess] = []

    def start(failpoint: str | None = None, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        w = WorkerProcess(amqp_url, db_url, queue_name, log_path=tmp_path / f"worker{len(started)}.log",
                          failpoint=failpoint, extra_args=args, env=env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


def req(lab: Lab) -> AcquireHostRequest:
    return AcquireHostRequest(deps={lab.label("board:eve")}, acls={lab.acl("acl")})


def leased_by_batch(engine) -> dict[str, set[int]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        rows = conn.execute(select(afe_hosts.c.id, afe_hosts.c.leased_by).where(afe_hosts.c.leased == 1)).all()
    out: dict[str, set[int]] = {}
    for host_id, batch in rows:
        out.setdefault(batch, set()).add(host_id)
    return out


@pytest.mark.parametrize("failpoint", ["before_commit", "after_commit", "after_reply"])
def test_worker_killed_at_any_step_loses_no_batch_and_leases_once(
    failpoint: str, lab: Lab, engine, workers, amqp_url: str, queue_name: str  # type: ignore[no-untyped-def]
) -> None:
    doomed = workers(failpoint)
    wait_for_consumers(amqp_url, queue_name, 1)
    with ThreadPoolExecutor(1) as pool, RDBClient(amqp_url, timeout_s=60, queue=queue_name) as client:
        future = pool.submit(client.acquire_hosts, [req(lab)] * 3)
        assert doomed.wait(30) == -signal.SIGKILL
        survivor = workers(None)
        hosts = future.result(60)
        got = {h.id for h in hosts if h}
        assert len(got) == 3
        # the redelivered batch has been answered (from the store when it had committed)
        wait_for(lambda: queue_state(amqp_url, queue_name)[0] == 0, 30, "queue drained")
        with RDBClient(amqp_url, timeout_s=30, queue=queue_name) as probe:
            probe.get_hosts([1])  # served after the redelivery: the survivor is past it
    holders = leased_by_batch(engine)
    assert list(holders.values()) == [got], f"exactly the replied hosts are leased, by one batch: {holders}"
    assert survivor.proc.poll() is None
    if failpoint != "before_commit":
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(rdb_batches)).scalar() >= 1
    if failpoint == "after_commit":
        assert "duplicate=1" in survivor.log(), "the survivor answered from the stored reply"


def test_poison_batch_is_dead_lettered_after_the_delivery_limit(
    lab: Lab, engine, workers, amqp_url: str, queue_name: str  # type: ignore[no-untyped-def]
) -> None:
    limit = 2
    w = workers("before_commit", "--delivery-limit", str(limit))
    wait_for_consumers(amqp_url, queue_name, 1)
    with ThreadPoolExecutor(1) as pool, RDBClient(amqp_url, timeout_s=45, queue=queue_name) as client:
        future = pool.submit(client.acquire_hosts, [req(lab)])
        for _ in range(limit + 2):
            assert w.wait(30) == -signal.SIGKILL
            if dead_letters(amqp_url, queue_name) >= 1:
                break
            w = workers("before_commit", "--delivery-limit", str(limit))
        wait_for(lambda: dead_letters(amqp_url, queue_name) == 1, 20, "the batch in the dead-letter queue")
        healthy = workers(None, "--delivery-limit", str(limit))
        wait_for_consumers(amqp_url, queue_name, 1)
        with RDBClient(amqp_url, timeout_s=30, queue=queue_name) as other:
            assert other.acquire_hosts([req(lab)])[0] is not None, "the worker keeps serving others"
        with pytest.raises(RDBTimeoutError):
            future.result(60)
    assert healthy.proc.poll() is None
    assert len(lab.leased_ids()) == 1


def test_expired_batch_is_not_run_and_is_dead_lettered(
    lab: Lab, workers, amqp_url: str, queue_name: str  # type: ignore[no-untyped-def]
) -> None:
    first = workers(None)
    wait_for_consumers(amqp_url, queue_name, 1)
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    with RDBClient(amqp_url, timeout_s=1, queue=queue_name) as client:
        with pytest.raises(RDBTimeoutError, match="NO consumer"):
            client.acquire_hosts([req(lab)])
    time.sleep(0.5)
    workers(None)
    wait_for(lambda: dead_letters(amqp_url, queue_name) == 1, 20, "the stale batch dead-lettered")
    assert lab.leased_ids() == set(), "a batch its client gave up on must not lease anything"


def test_sigterm_finishes_the_current_batch_then_exits(
    lab: Lab, workers, amqp_url: str, queue_name: str  # type: ignore[no-untyped-def]
) -> None:
    w = workers("slow_batch", env={"RDB_FAILPOINT_SLOW_S": "3"})
    wait_for_consumers(amqp_url, queue_name, 1)
    with ThreadPoolExecutor(1) as pool, RDBClient(amqp_url, timeout_s=30, queue=queue_name) as client:
        future = pool.submit(client.acquire_hosts, [req(lab)] * 2)
        time.sleep(1)
        w.signal(signal.SIGTERM)
        hosts = future.result(30)
    assert w.wait(30) == 0
    assert all(hosts) and {h.id for h in hosts} == lab.leased_ids()
    assert queue_state(amqp_url, queue_name) == (0, 0), "acked, and no longer consuming"


def test_second_signal_exits_at_once(lab: Lab, workers, amqp_url: str, queue_name: str) -> None:  # type: ignore[no-untyped-def]
    w = workers("slow_batch", env={"RDB_FAILPOINT_SLOW_S": "20"})
    wait_for_consumers(amqp_url, queue_name, 1)
    with RDBClient(amqp_url, timeout_s=2, queue=queue_name) as client:
        with pytest.raises(RDBTimeoutError):
            client.acquire_hosts([req(lab)])
    w.signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    w.signal(signal.SIGINT)
    assert w.wait(10) == 1
    assert time.monotonic() - started < 5


def test_long_batch_keeps_its_connection_alive(
    lab: Lab, amqp_url: str, db_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    from rdb_worker.worker import Worker

    monkeypatch.setenv("RDB_FAILPOINT", "slow_batch")
    monkeypatch.setattr("rdb_worker.failpoints.SLOW_BATCH_S", 7.0)
    url = amqp_url + ("&" if "?" in amqp_url else "?") + "heartbeat=2"
    worker = Worker(url, db_url, queue=queue_name, release_interval_s=0)
    worker.start()
    try:
        with RDBClient(amqp_url, timeout_s=30, queue=queue_name) as client:
            hosts = client.acquire_hosts([req(lab)])
        assert hosts[0] is not None
        assert worker.consumer.epoch == 1, "the worker never had to reconnect"
    finally:
        worker.stop()


def _child_pids(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_pool_supervisor_restarts_a_dead_child(
    lab: Lab, workers, amqp_url: str, queue_name: str  # type: ignore[no-untyped-def]
) -> None:
    pool = workers(None, "--processes", "2")
    wait_for_consumers(amqp_url, queue_name, 2)
    victim = _child_pids(pool.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in _child_pids(pool.proc.pid) and len(_child_pids(pool.proc.pid)) == 2,
             30, "a replacement child")
    wait_for_consumers(amqp_url, queue_name, 2)
    assert f"(pid {victim}) exited with -9" in pool.log()
    with RDBClient(amqp_url, timeout_s=30, queue=queue_name) as client:
        assert client.acquire_hosts([req(lab)])[0] is not None
    pool.signal(signal.SIGTERM)
    assert pool.wait(30) == 0


def test_automatic_release_frees_idle_hosts_but_not_fresh_leases(
    engine, amqp_url: str, db_url: str, queue_name: str  # type: ignore[no-untyped-def]
) -> None:
    from rdb_worker.worker import Worker

    lab = Lab(engine)
    idle = lab.host("idle", ("board:eve",), ("acl",), leased=True, leased_at=dt.datetime.utcnow() - dt.timedelta(hours=1))
    fresh = lab.host("fresh", ("board:kip",), ("acl",))
    w1 = Worker(amqp_url, db_url, queue=queue_name, release_interval_s=0.3, release_grace_s=30)
    w2 = Worker(amqp_url, db_url, queue=queue_name, release_interval_s=0.3, release_grace_s=30)
    w1.start()
    w2.start()
    try:
        with RDBClient(amqp_url, timeout_s=30, queue=queue_name) as client:
            (host,) = client.acquire_hosts([AcquireHostRequest(deps={lab.label("board:kip")}, acls={lab.acl("acl")})])
            assert host.id == fresh
            wait_for(lambda: idle not in lab.leased_ids(), 10, "the idle host released automatically")
            time.sleep(1.0)
            assert fresh in lab.leased_ids(), "a lease younger than the grace period is never released"
    finally:
        w1.stop()
        w2.stop()
    assert w1.housekeeper.cycles + w2.housekeeper.cycles >= 2


def test_stress_many_publishers_many_workers_no_double_lease(
    engine, workers, amqp_url: str, queue_name: str  # type: ignore[no-untyped-def]
) -> None:
    lab = Lab(engine)
    n_hosts = 150
    host_ids = [lab.host(f"s{i}", ("board:eve",), ("acl",)) for i in range(n_hosts)]
    workers(None)
    workers(None)
    wait_for_consumers(amqp_url, queue_name, 2)
    request = req(lab)
    grants: list[int] = []
    replies = 0
    lock = threading.Lock()

    def publisher(seed: int) -> None:
        nonlocal replies
        with RDBClient(amqp_url, timeout_s=60, queue=queue_name) as client:
            for i in range(200):
                if i % 10 == 9:
                    errs = client.update_hosts([UpdateHostRequest(host_ids[(seed + i) % n_hosts], {"dirty": i % 2})])
                    assert errs == [None]
                    got: list[int] = []
                else:
                    got = [h.id for h in client.acquire_hosts([request, request]) if h]
                with lock:
                    grants.extend(got)
                    replies += 1

    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(publisher, s) for s in range(4)]:
            f.result(600)
    assert replies == 800, "every batch got exactly one reply"
    assert len(grants) == len(set(grants)) == n_hosts, "hosts ran out, and none was handed out twice"
    assert lab.leased_ids() == set(host_ids)
    assert sum(len(v) for v in leased_by_batch(engine).values()) == n_hosts


def test_broker_restart_workers_and_clients_reconnect(engine, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from rdb_worker.devservers import PrivateRabbitMQ
    from rdb_worker.worker import Worker

    lab = Lab(engine)
    lab.host("h0", ("board:eve",), ("acl",))
    lab.host("h1", ("board:eve",), ("acl",))
    base = Path(__file__).resolve().parent.parent / ".rdb-servers" / f"fault-broker-{uuid.uuid4().hex[:6]}"
    broker = PrivateRabbitMQ(base, name="faultbroker")
    broker.start()
    queue = "rdb.fault.broker"
    worker = Worker(broker.amqp_url, db_url, queue=queue, release_interval_s=0)
    try:
        worker.start()
        with RDBClient(broker.amqp_url, timeout_s=60, queue=queue) as client:
            assert client.acquire_hosts([req(lab)])[0] is not None
            broker.stop()
            with ThreadPoolExecutor(1) as pool:
                future = pool.submit(client.acquire_hosts, [req(lab)])  # in flight while the broker is down
                time.sleep(2)
                broker.start()
                (host,) = future.result(60)
            assert host is not None
            assert client.get_hosts([host.id])[0].leased is True
        assert worker.consumer.epoch >= 2, "the worker reconnected"
        assert len(lab.leased_ids()) == 2
    finally:
        worker.stop()
        broker.destroy()
        shutil.rmtree(base, ignore_errors=True)


def test_database_outage_gives_error_replies_then_recovers(amqp_url: str, queue_name: str) -> None:
    from rdb_worker.devservers import PrivateMariaDB
    from rdb_worker.worker import Worker
    from schema import migrate

    base = Path(__file__).resolve().parent.parent / ".rdb-servers" / f"fault-db-{uuid.uuid4().hex[:6]}"
    db = PrivateMariaDB(base, name="faultdb")
    db.start()
    url = db.create_database("outage")
    migrate.upgrade(url)
    engine = create_engine(url)
    lab = Lab(engine)
    lab.host("h0", ("board:eve",), ("acl",))
    worker = Worker(amqp_url, url, queue=queue_name, release_interval_s=0)
    try:
        worker.start()
        with RDBClient(amqp_url, timeout_s=30, queue=queue_name) as client:
            db.stop()
            with pytest.raises(DatabaseUnavailableError):
                client.acquire_hosts([req(lab)])
            db.start()
            wait_for(lambda: client.get_hosts([1])[0] is not None, 30, "service back after the outage")
            assert client.acquire_hosts([req(lab)])[0] is not None
        assert worker.consumer.epoch == 1 and not worker.stopped
    finally:
        worker.stop()
        engine.dispose()
        db.destroy()
        shutil.rmtree(base, ignore_errors=True)


def test_timed_out_acquisition_leaves_no_lease_beyond_one_release_cycle(
    lab: Lab, amqp_url: str, db_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    from rdb_worker.worker import Worker

    monkeypatch.setenv("RDB_FAILPOINT", "slow_batch")
    monkeypatch.setattr("rdb_worker.failpoints.SLOW_BATCH_S", 2.0)
    grace_s, interval_s = 1.0, 0.5
    worker = Worker(amqp_url, db_url, queue=queue_name, release_interval_s=interval_s, release_grace_s=grace_s)
    worker.start()
    try:
        with RDBClient(amqp_url, timeout_s=0.8, queue=queue_name) as client:
            with pytest.raises(RDBTimeoutError):
                client.acquire_hosts([req(lab)] * 2)
        wait_for(lambda: len(lab.leased_ids()) == 2, 10, "the worker to commit the leases its client gave up on")
        orphaned_at = time.monotonic()
        wait_for(lambda: not lab.leased_ids(), 10, "the release cycle to free the orphaned leases")
        assert time.monotonic() - orphaned_at < grace_s + 2 * interval_s + 2.0
    finally:
        worker.stop()
