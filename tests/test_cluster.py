"""A 3-node RabbitMQ cluster on this machine: a node stops under load, nothing is lost.

Clients and workers are given every node's URL; when the node they use stops they
fail over to the next one. The request queue is a quorum queue replicated on all three
nodes, so batches published with confirms survive the loss of one.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rdb_client import AcquireHostRequest, RDBClient
from tests.labkit import Lab

pytestmark = pytest.mark.slow


def test_cluster_node_loss_under_load_loses_no_batch_and_leases_once(engine, db_url: str) -> None:  # type: ignore[no-untyped-def]
    from rdb_worker.devservers import PrivateRabbitMQ
    from rdb_worker.worker import Worker

    base = Path(__file__).resolve().parent.parent / ".rdb-servers" / f"cluster-{uuid.uuid4().hex[:6]}"
    nodes: list[PrivateRabbitMQ] = []
    workers: list[Worker] = []
    try:
        seed = PrivateRabbitMQ(base, name="c1")
        nodes.append(seed)
        seed.start()
        for name in ("c2", "c3"):
            node = PrivateRabbitMQ(base, name=name, cluster_with=seed)
            nodes.append(node)
            node.start()
        urls = [n.amqp_url for n in nodes]
        lab = Lab(engine)
        n_hosts = 80
        for i in range(n_hosts):
            lab.host(f"c{i}", ("board:eve",), ("acl",))
        queue = "rdb.cluster"
        # Both workers and clients prefer the first node: stopping it forces failover.
        for _ in range(2):
            w = Worker(urls, db_url, queue=queue, release_interval_s=0)
            w.start()
            workers.append(w)
        time.sleep(2)  # let the new quorum queue elect and settle before a node goes
        members = nodes[1].ctl("list_queues", "name", "members")
        assert all(n.node_name in members for n in nodes), "the request queue is replicated on all nodes"

        request = AcquireHostRequest(deps={lab.label("board:eve")}, acls={lab.acl("acl")})
        grants: list[int] = []
        calls = 0
        lock = threading.Lock()

        def scheduler() -> None:
            nonlocal calls
            with RDBClient(urls, timeout_s=60, queue=queue) as client:
                for _ in range(40):
                    got = [h.id for h in client.acquire_hosts([request]) if h]
                    with lock:
                        grants.extend(got)
                        calls += 1
                    time.sleep(0.05)

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(scheduler) for _ in range(3)]
            time.sleep(1.0)
            nodes[0].stop()  # under load
            for f in futures:
                f.result(300)  # every call completed: none raised, none lost
        assert calls == 120
        assert len(grants) == len(set(grants)) == n_hosts, "hosts ran out and none was leased twice"
        assert lab.leased_ids() == {h for h in grants}
        assert all(w.consumer.epoch >= 2 for w in workers), "workers failed over to another node"
    finally:
        for w in workers:
            w.stop(timeout_s=15)
        for node in reversed(nodes):
            try:
                node.destroy()
            except Exception:  # noqa: BLE001 - best effort teardown of a stopped node
                pass
        shutil.rmtree(base, ignore_errors=True)
