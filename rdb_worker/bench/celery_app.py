"""The per-request pattern as most Python teams would write it: a Celery task per request.

Same RabbitMQ, ``rpc://`` result backend (replies on the caller's own queue), JSON
serialization, and the same lease logic: each task runs the rdb worker's Dispatcher on
a batch of one, so the only difference from the rdb is the shape of the traffic (one
message, one transaction and one reply per request). Bench-only: needs the ``bench``
extra. The worker process reads its broker and database from the environment:
RDB_BENCH_AMQP_URL, and RDB_BENCH_DB_URL (any database on the server; each task names
the lab database it works on).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from celery import Celery

from rdb_client import protocol
from rdb_client.requests import AcquireHostRequest, UpdateHostRequest

app = Celery("rdb_bench", broker=os.environ.get("RDB_BENCH_AMQP_URL", "amqp://"), backend="rpc://")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue="rdb_bench",
)

_dispatchers: dict[str, Any] = {}


def _dispatcher(database: str) -> Any:
    if database not in _dispatchers:
        from rdb_worker.bench.lab import database_url
        from rdb_worker.db import make_engine
        from rdb_worker.dispatcher import Dispatcher

        engine = make_engine(database_url(os.environ["RDB_BENCH_DB_URL"], database))
        _dispatchers[database] = Dispatcher(engine, worker_name="celery")
    return _dispatchers[database]


def _run_one(database: str, kind: str, request: Any) -> Any:
    body = protocol.encode_batch(kind, uuid.uuid4().hex, [request])
    reply_body, _outcome = _dispatcher(database).handle(body)
    reply = protocol.decode_reply(reply_body)
    if reply.error is not None:
        raise reply.error
    assert reply.results is not None
    return reply.results[0]


@app.task(name="rdb_bench.acquire_host")
def acquire_host(database: str, request: dict[str, Any]) -> dict[str, Any] | None:
    """Lease one host for one request; the host's info map, or None."""
    return _run_one(database, "acquire", AcquireHostRequest.from_wire(request))


@app.task(name="rdb_bench.update_host")
def update_host(database: str, request: dict[str, Any]) -> dict[str, Any] | None:
    """Apply one host update; None, or the error map of the request."""
    return _run_one(database, "update", UpdateHostRequest.from_wire(request))
