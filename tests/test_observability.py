"""Metrics, health endpoints and the lease history, on real servers."""

from __future__ import annotations

import urllib.error
import urllib.request

from sqlalchemy import select

from rdb_client import AcquireHostRequest, RDBClient, UpdateHostRequest
from schema.tables import rdb_host_history
from tests.labkit import Lab


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_worker_serves_metrics_liveness_and_readiness(engine, amqp_url: str, queue_name: str, start_worker) -> None:  # type: ignore[no-untyped-def]
    lab = Lab(engine)
    lab.host("h", ("board:eve",), ("acl",))
    worker = start_worker(metrics_port=0)
    port = worker.http_server.server_address[1]
    base = f"http://127.0.0.1:{port}"
    assert _get(base + "/healthz")[0] == 200
    status, text = _get(base + "/readyz")
    assert status == 200 and "schema" in text
    with RDBClient(amqp_url, timeout_s=20, queue=queue_name) as client:
        req = AcquireHostRequest(deps={lab.label("board:eve")}, acls={lab.acl("acl")})
        client.acquire_hosts([req, req])
    status, text = _get(base + "/metrics")
    assert status == 200
    assert 'rdb_batches_total{kind="acquire",outcome="ok"} 1.0' in text
    assert 'rdb_requests_total{kind="acquire"} 2.0' in text
    assert "rdb_hosts_leased_total 1.0" in text
    assert "rdb_unsatisfied_requests_total 1.0" in text
    assert 'rdb_batch_duration_seconds_count{kind="acquire"} 1.0' in text
    worker.stop()
    assert worker.readiness() == (False, "draining"), "a draining worker must leave the load balancer"


def test_every_lease_update_and_release_is_in_the_history(engine, client: RDBClient) -> None:  # type: ignore[no-untyped-def]
    lab = Lab(engine)
    host_id = lab.host("h", ("board:eve",), ("acl",))
    (host,) = client.acquire_hosts([AcquireHostRequest(deps={lab.label("board:eve")}, acls={lab.acl("acl")})])
    holder = lab.row(host_id)["leased_by"]
    assert client.update_hosts([UpdateHostRequest(host_id, {"status": "Running"})]) == [None]
    assert client.update_hosts([UpdateHostRequest(host_id, {"status": "Ready"})]) == [None]
    assert client.release_hosts(grace_s=0) == [host_id]
    with engine.connect() as conn:
        rows = conn.execute(
            select(rdb_host_history.c.action, rdb_host_history.c.field, rdb_host_history.c.old_value,
                   rdb_host_history.c.new_value, rdb_host_history.c.batch_id, rdb_host_history.c.worker)
            .where(rdb_host_history.c.host_id == host_id).order_by(rdb_host_history.c.id)
        ).all()
    assert [(r.action, r.field, r.old_value, r.new_value) for r in rows] == [
        ("lease", "leased_by", None, holder),
        ("update", "status", "Ready", "Running"),
        ("update", "status", "Running", "Ready"),
        ("release", "leased_by", holder, None),
    ]
    assert rows[0].batch_id == holder and all(r.worker for r in rows)


def test_a_rolled_back_batch_leaves_no_history(engine, client: RDBClient) -> None:  # type: ignore[no-untyped-def]
    lab = Lab(engine)
    a = lab.host("a", ("board:eve",), ("acl",))
    errors = client.update_hosts([UpdateHostRequest(a, {"locked_by_id": 4242})])
    assert errors[0] is not None
    with engine.connect() as conn:
        assert conn.execute(select(rdb_host_history.c.id).where(rdb_host_history.c.host_id == a)).all() == []
