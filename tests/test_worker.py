"""The rdb end to end: client -> RabbitMQ -> worker -> MariaDB -> reply, on real servers."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import msgpack
import pika
import pytest
from sqlalchemy import select

from rdb_client import (
    AcquireHostRequest,
    NoWorkerQueueError,
    RDBClient,
    RDBException,
    RDBTimeoutError,
    UpdateHostRequest,
)
from rdb_client.exceptions import (
    BatchTooLargeError,
    ColumnNotWritableError,
    MalformedBatchError,
    UnknownColumnError,
    UnknownHostError,
    UnsupportedVersionError,
    WrongTypeError,
)
from rdb_client.protocol import BrokerNames, decode_reply
from schema.tables import afe_hosts
from tests.labkit import Lab


@pytest.fixture
def lab(engine) -> Lab:  # type: ignore[no-untyped-def]
    return Lab(engine)


def acq(lab: Lab, *deps: str, acls: tuple[str, ...] = ("acl",), **kw: object) -> AcquireHostRequest:
    return AcquireHostRequest(deps={lab.label(d) for d in deps}, acls={lab.acl(a) for a in acls}, **kw)  # type: ignore[arg-type]


def test_identical_requests_get_different_hosts_then_none(lab: Lab, client: RDBClient) -> None:
    ids = [lab.host(f"h{i}", ("board:eve", "pool:bvt"), ("acl",)) for i in range(3)]
    req = acq(lab, "board:eve", "pool:bvt")
    hosts = client.acquire_hosts([req] * 4)
    assert sorted(h.id for h in hosts[:3] if h) == ids
    assert hosts[3] is None
    row = lab.row(ids[0])
    assert row["leased"] == 1 and row["leased_by"] and row["leased_at"] is not None


def test_results_are_aligned_with_request_order(lab: Lab, client: RDBClient) -> None:
    eve = lab.host("eve1", ("board:eve",), ("acl",))
    kip = lab.host("kip1", ("board:kip",), ("acl",))
    hosts = client.acquire_hosts([acq(lab, "board:kip"), acq(lab, "board:nope"), acq(lab, "board:eve")])
    assert [h.id if h else None for h in hosts] == [kip, None, eve]


@pytest.mark.parametrize(
    "state",
    [
        {"leased": True},
        {"locked": True},
        {"invalid": True},
        {"status": "Repairing"},
        {"status": "Running"},
    ],
)
def test_unavailable_hosts_are_never_acquired(lab: Lab, client: RDBClient, state: dict) -> None:
    lab.host("bad", ("board:eve",), ("acl",), **state)
    assert client.acquire_hosts([acq(lab, "board:eve")]) == [None]


def test_null_status_counts_as_ready(lab: Lab, client: RDBClient) -> None:
    host_id = lab.host("h", ("board:eve",), ("acl",), status=None)
    assert client.acquire_hosts([acq(lab, "board:eve")])[0].id == host_id


def test_host_must_share_an_acl_and_request_without_acls_matches_nothing(lab: Lab, client: RDBClient) -> None:
    lab.host("h", ("board:eve",), ("other",))
    assert client.acquire_hosts([acq(lab, "board:eve"), acq(lab, "board:eve", acls=())]) == [None, None]


def test_preferred_deps_pick_the_host_that_carries_them(lab: Lab, client: RDBClient) -> None:
    lab.host("plain", ("board:eve",), ("acl",))
    provisioned = lab.host("prov", ("board:eve", "cros-version:R1"), ("acl",))
    req = acq(lab, "board:eve", preferred_deps={lab.label("cros-version:R1")})
    assert client.acquire_hosts([req])[0].id == provisioned


def test_validation_wins_over_higher_priority_acquisition(lab: Lab, client: RDBClient) -> None:
    host_id = lab.host("h", ("board:eve",), ("acl",))
    pinned = acq(lab, "board:eve", host_id=host_id)
    result = client.acquire_hosts([acq(lab, "board:eve", priority=100), pinned])
    assert result[0] is None and result[1].id == host_id


def test_one_time_invalid_host_is_validated_without_acl(lab: Lab, client: RDBClient) -> None:
    host_id = lab.host("one-time", ("board:eve",), (), invalid=True)
    assert client.acquire_hosts([acq(lab, "board:eve", host_id=host_id)])[0].id == host_id


def test_suite_minimum_survives_higher_priority_suite(lab: Lab, client: RDBClient) -> None:
    for i in range(4):
        lab.host(f"h{i}", ("board:eve",), ("acl",))
    high = acq(lab, "board:eve", priority=10, parent_job_id=100, suite_min_duts=1)
    low = acq(lab, "board:eve", priority=0, parent_job_id=200, suite_min_duts=2)
    result = client.acquire_hosts([high] * 4 + [low] * 2)
    assert all(result[4:]), "the low-priority suite must get its two minimum DUTs"
    assert sum(1 for h in result[:4] if h) == 2


def test_get_hosts_returns_full_host_info_leased_or_not(lab: Lab, client: RDBClient) -> None:
    host_id = lab.host("eve-1", ("board:eve", "pool:bvt", "pool:cq"), ("acl",), leased=True, platform="eve")
    host, missing = client.get_hosts([host_id, 999_999])
    assert missing is None
    assert host.id == host_id and host.hostname == "eve-1" and host.leased is True
    assert host.platform == "eve" and host.board == "eve" and sorted(host.pools) == ["bvt", "cq"]
    assert host.acls == [lab.acl("acl")]
    platform, labels = host.platform_and_labels()
    assert platform == "eve" and "eve" not in labels and "board:eve" in labels


def test_updates_merge_last_write_wins_and_bad_ones_fail_alone(lab: Lab, client: RDBClient) -> None:
    a = lab.host("a", ("board:eve",), ("acl",))
    b = lab.host("b", ("board:eve",), ("acl",))
    errors = client.update_hosts(
        [
            UpdateHostRequest(a, {"status": "Running", "dirty": True}),
            UpdateHostRequest(a, {"status": "Repairing"}),
            UpdateHostRequest(b, {"no_such_column": 1}),
            UpdateHostRequest(b, {"leased": 0}),
            UpdateHostRequest(b, {"protection": "high"}),
            UpdateHostRequest(424242, {"status": "Ready"}),
            UpdateHostRequest(b, {"status": "Cleaning"}),
        ]
    )
    assert errors[0] is None and errors[1] is None and errors[6] is None
    assert isinstance(errors[2], UnknownColumnError) and "no_such_column" in str(errors[2])
    assert isinstance(errors[3], ColumnNotWritableError) and "leased" in str(errors[3])
    assert isinstance(errors[4], WrongTypeError) and "protection" in str(errors[4])
    assert isinstance(errors[5], UnknownHostError) and "424242" in str(errors[5])
    assert lab.row(a)["status"] == "Repairing" and lab.row(a)["dirty"] == 1
    assert lab.row(b)["status"] == "Cleaning" and lab.row(b)["leased"] == 0


def test_update_the_database_refuses_fails_only_its_own_requests(lab: Lab, client: RDBClient) -> None:
    a = lab.host("a", ("board:eve",), ("acl",))
    b = lab.host("b", ("board:eve",), ("acl",))
    errors = client.update_hosts(
        [
            UpdateHostRequest(a, {"locked_by_id": 987654}),  # no such afe_users row: FK refuses it
            UpdateHostRequest(b, {"protection": 2**40}),  # out of range for INT
            UpdateHostRequest(b, {"status": "Ready", "lock_time": "2026-01-01T00:00:00+02:00"}),
            UpdateHostRequest(a, {"lock_reason": "maintenance"}),
        ]
    )
    assert isinstance(errors[0], WrongTypeError) and "987654" in str(errors[0])
    assert isinstance(errors[1], WrongTypeError)
    assert isinstance(errors[2], WrongTypeError) and "lock_time" in str(errors[2])
    assert isinstance(errors[3], WrongTypeError), "merged with the refused request for the same host"
    assert lab.row(a)["locked_by_id"] is None and lab.row(b)["protection"] == 0


def test_client_host_updates_go_through_the_rdb(lab: Lab, client: RDBClient) -> None:
    host_id = lab.host("h", ("board:eve",), ("acl",))
    (host,) = client.get_hosts([host_id])
    host.set_status("Running")
    assert host.status == "Running" and lab.row(host_id)["status"] == "Running"
    with pytest.raises(ColumnNotWritableError):
        host.update_field("id", 5)
    assert lab.row(host_id)["id"] == host_id


def _old() -> dt.datetime:
    return dt.datetime.utcnow() - dt.timedelta(hours=1)


def test_release_frees_only_idle_old_leases(lab: Lab, client: RDBClient) -> None:
    ready = lab.host("ready", leased=True, leased_at=_old())
    null_status = lab.host("null", leased=True, leased_at=_old(), status=None)
    never_recorded = lab.host("norecord", leased=True, leased_at=None)
    lab.host("running", leased=True, leased_at=_old(), status="Running")
    lab.host("repairing", leased=True, leased_at=_old(), status="Repair Failed")
    lab.host("locked", leased=True, leased_at=_old(), locked=True)
    lab.host("young", leased=True, leased_at=dt.datetime.utcnow())
    lab.host("free", leased=False)
    busy = lab.host("busy", leased=True, leased_at=_old())
    lab.hqe(lab.job(), busy, active=True)
    finished = lab.host("finished", leased=True, leased_at=_old())
    lab.hqe(lab.job(), finished, active=False, complete=True)
    tasked = lab.host("tasked", leased=True, leased_at=_old())
    lab.special_task(tasked, complete=False)
    done_task = lab.host("donetask", leased=True, leased_at=_old())
    lab.special_task(done_task, complete=True)

    released = client.release_hosts(grace_s=60)
    assert released == sorted([ready, null_status, never_recorded, finished, done_task])
    assert lab.row(ready)["leased"] == 0 and lab.row(ready)["leased_by"] is None
    assert client.release_hosts(grace_s=60) == []


def test_release_grace_period_protects_a_fresh_lease(lab: Lab, client: RDBClient) -> None:
    host_id = lab.host("h", ("board:eve",), ("acl",))
    assert client.acquire_hosts([acq(lab, "board:eve")])[0].id == host_id
    assert client.release_hosts() == []  # worker default: 60 s
    assert client.release_hosts(grace_s=0) == [host_id]


def test_empty_requests_send_nothing(amqp_url: str) -> None:
    with RDBClient(amqp_url, timeout_s=2, queue=f"rdb.nobody.{uuid.uuid4().hex}") as c:
        assert c.acquire_hosts([]) == [] and c.get_hosts([]) == [] and c.update_hosts([]) == []


def test_queue_without_worker_raises_at_once(amqp_url: str) -> None:
    with RDBClient(amqp_url, timeout_s=20, queue=f"rdb.nobody.{uuid.uuid4().hex}") as c:
        started = time.monotonic()
        with pytest.raises(NoWorkerQueueError, match="no worker"):
            c.get_hosts([1])
        assert time.monotonic() - started < 10


def test_timeout_is_timeouterror_and_says_no_consumer(amqp_url: str, queue_name: str, start_worker) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker()
    worker.stop()  # the queue exists, nobody consumes it
    with RDBClient(amqp_url, timeout_s=1.0, queue=queue_name) as c:
        with pytest.raises(RDBTimeoutError) as info:
            c.get_hosts([1])
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, RDBException)
    assert "NO consumer" in str(info.value)


def test_late_reply_is_never_handed_to_a_later_call(lab: Lab, amqp_url: str, queue_name: str, start_worker) -> None:  # type: ignore[no-untyped-def]
    host_id = lab.host("h", ("board:eve",), ("acl",))
    worker = start_worker()
    worker.stop()
    with RDBClient(amqp_url, timeout_s=0.5, queue=queue_name) as c:
        with pytest.raises(RDBTimeoutError):
            c.get_hosts([host_id])  # expires in the queue; a worker may still answer it late
        start_worker()
        c.timeout_s = 20
        (host,) = c.acquire_hosts([acq(lab, "board:eve")])
    assert host is not None and host.id == host_id and host.leased is True


def _raw_call(amqp_url: str, queue: str, body: bytes, timeout_s: float = 20) -> bytes:
    names = BrokerNames(queue)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        reply_q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish(names.exchange, names.routing_key, body,
                         pika.BasicProperties(reply_to=reply_q, correlation_id="raw"))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            method, _props, reply = ch.basic_get(reply_q, auto_ack=True)
            if method:
                return reply
            time.sleep(0.05)
        raise AssertionError("no reply to a raw message")
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\x00\xffgarbage", MalformedBatchError),
        (msgpack.packb({"v": 2, "kind": "get", "batch_id": "x", "requests": []}), UnsupportedVersionError),
        (msgpack.packb({"v": 1, "kind": "get", "batch_id": "x"}), MalformedBatchError),
    ],
)
def test_malformed_message_gets_error_reply_and_worker_keeps_serving(
    lab: Lab, client: RDBClient, amqp_url: str, queue_name: str, body: bytes, error: type
) -> None:
    reply = decode_reply(_raw_call(amqp_url, queue_name, body))
    assert isinstance(reply.error, error)
    host_id = lab.host("h", ("board:eve",), ("acl",))
    assert client.get_hosts([host_id])[0].id == host_id


def test_batch_over_the_size_limit_is_refused_whole(lab: Lab, amqp_url: str, queue_name: str, start_worker) -> None:  # type: ignore[no-untyped-def]
    start_worker(max_requests=5)
    lab.host("h", ("board:eve",), ("acl",))
    with RDBClient(amqp_url, timeout_s=20, queue=queue_name) as c:
        with pytest.raises(BatchTooLargeError, match="limit is 5"):
            c.acquire_hosts([acq(lab, "board:eve")] * 6)
    assert lab.leased_ids() == set()


def test_two_thousand_requests_travel_as_one_batch_answered_in_order(lab: Lab, client: RDBClient, engine) -> None:  # type: ignore[no-untyped-def]
    boards = [f"board:b{i}" for i in range(10)]
    rows = []
    with engine.begin() as conn:
        for b in boards:
            lab.label(b)
        lab.acl("acl")
    for i in range(1500):
        rows.append(lab.host(f"h{i}", (boards[i % 10],), ("acl",))) if i < 20 else None
    # bulk-insert the rest quickly
    from schema.tables import afe_acl_groups_hosts, afe_hosts_labels

    with engine.begin() as conn:
        start = conn.execute(select(afe_hosts.c.id).order_by(afe_hosts.c.id.desc()).limit(1)).scalar() + 1
        conn.execute(afe_hosts.insert(), [dict(id=start + i, hostname=f"x{i}", status="Ready", leased=0,
                                               protection=0, dirty=0) for i in range(1480)])
        conn.execute(afe_hosts_labels.insert(), [dict(host_id=start + i, label_id=lab.labels[boards[i % 10]])
                                                 for i in range(1480)])
        conn.execute(afe_acl_groups_hosts.insert(), [dict(host_id=start + i, aclgroup_id=lab.acls["acl"])
                                                     for i in range(1480)])
    requests = [acq(lab, boards[i % 10]) for i in range(2000)]
    hosts = client.acquire_hosts(requests)
    assert len(hosts) == 2000
    got = [h for h in hosts if h]
    assert len(got) == 1500 and len({h.id for h in got}) == 1500
    for request, host in zip(requests, hosts):
        if host:
            assert f"board:b{list(request.deps)[0] - lab.labels['board:b0']}" in host.labels


def test_two_workers_racing_never_lease_a_host_twice(lab: Lab, amqp_url: str, queue_name: str, start_worker, engine) -> None:  # type: ignore[no-untyped-def]
    for i in range(60):
        lab.host(f"h{i}", ("board:eve",), ("acl",))
    start_worker()
    start_worker()
    req = acq(lab, "board:eve")
    got: list[int] = []
    errors: list[BaseException] = []

    def scheduler() -> None:
        try:
            with RDBClient(amqp_url, timeout_s=30, queue=queue_name) as c:
                for _ in range(10):
                    got.extend(h.id for h in c.acquire_hosts([req] * 3) if h)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(got) == len(set(got)) == 60, "every host leased exactly once, and hosts ran out"
    with engine.connect() as conn:
        holders = dict(conn.execute(select(afe_hosts.c.id, afe_hosts.c.leased_by)).all())
    assert all(holders[h] for h in got)


def test_worker_refuses_a_database_not_at_head(empty_db_url: str, amqp_url: str, queue_name: str) -> None:
    from rdb_worker.db import SchemaRevisionError
    from rdb_worker.worker import Worker
    from schema import migrate

    migrate.upgrade(empty_db_url, "0002")
    worker = Worker(amqp_url, empty_db_url, queue=queue_name)
    with pytest.raises(SchemaRevisionError, match="revision 0002"):
        worker.start(timeout_s=20)


def test_kinds_sharing_hosts_still_find_every_free_host(lab: Lab, client: RDBClient) -> None:
    # 30 hosts carry board:eve and pool:bvt; 1 more carries only board:eve. The narrow,
    # higher-priority kind takes 30; the wide kind's first read (its need plus slack) is
    # all taken, so the worker must read further to find host 31 for it.
    ids = [lab.host(f"both{i}", ("board:eve", "pool:bvt"), ("acl",)) for i in range(30)]
    last = lab.host("eve-only", ("board:eve",), ("acl",))
    narrow = acq(lab, "board:eve", "pool:bvt", priority=10)
    wide = acq(lab, "board:eve")
    hosts = client.acquire_hosts([wide] + [narrow] * 30)
    assert hosts[0] is not None and hosts[0].id == last
    assert sorted(h.id for h in hosts[1:]) == ids


def test_many_distinct_kinds_on_a_small_lab_are_matched_in_memory(lab: Lab, amqp_url: str, queue_name: str, start_worker) -> None:  # type: ignore[no-untyped-def]
    ids = [lab.host(f"n{i}", ("board:eve", f"unit:{i}"), ("acl",)) for i in range(80)]
    worker = start_worker()
    requests = [acq(lab, "board:eve", f"unit:{i}") for i in range(79, 9, -1)]  # 70 distinct kinds
    with RDBClient(amqp_url, timeout_s=20, queue=queue_name) as c:
        hosts = c.acquire_hosts(requests)
    assert [h.id for h in hosts] == [ids[i] for i in range(79, 9, -1)]
    assert worker.handlers.last_stats["full_reads"] == 1, "one read of the availability, not 70 queries"
