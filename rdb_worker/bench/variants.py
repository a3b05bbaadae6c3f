"""The five ways of doing a tick's work that the benchmark compares.

Each variant runs one ``Tick`` against a freshly reset lab and returns a ``Run``: the
seconds the tick took (scaled from a sample for the per-request variants when asked)
and how many hosts it leased.

- rdb: the real RDBClient and a real rdb-worker process, one message per batch.
- in-process: ``Dispatcher.handle`` on the encoded batch, in this process, no broker.
- per-request: the RDBClient with batches of one, one after the other (one message and
  one transaction per request) through the same broker and worker process.
- celery: a Celery task per request on the same broker (rpc:// results) running the
  same Dispatcher on a batch of one, in a solo-pool Celery worker process.
- floor: the least SQL for the batch's work: in one transaction, one read of the
  available hosts with their labels and acls, one locking UPDATE of the chosen ids
  (and, for an update batch, one UPDATE per distinct payload).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from rdb_client import RDBClient, protocol
from rdb_client.requests import AcquireHostRequest, UpdateHostRequest
from rdb_worker.bench.workloads import Tick, sample_indices
from rdb_worker.dispatcher import Dispatcher

VARIANTS = ("rdb", "in-process", "per-request", "celery", "floor")
PER_REQUEST_VARIANTS = frozenset({"per-request", "celery"})
TIMEOUT_S = 120.0


@dataclass
class Run:
    seconds: float
    leased: int
    sampled: int | None = None  # requests actually timed, when scaled from a sample


class Variant:
    name = ""

    def run(self, tick: Tick, sample: int | None = None) -> Run:
        raise NotImplementedError

    def close(self) -> None:
        pass


class RdbVariant(Variant):
    name = "rdb"

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.client = RDBClient(amqp_url, timeout_s=TIMEOUT_S, queue=queue)

    def run(self, tick: Tick, sample: int | None = None) -> Run:
        started = time.perf_counter()
        hosts = self.client.acquire_hosts(tick.acquire)
        if tick.update:
            errors = self.client.update_hosts(tick.update)
            if any(errors):
                raise RuntimeError(f"update refused: {next(e for e in errors if e)}")
        return Run(time.perf_counter() - started, sum(h is not None for h in hosts))

    def close(self) -> None:
        self.client.close()


class InProcessVariant(Variant):
    name = "in-process"

    def __init__(self, engine: Engine) -> None:
        self.dispatcher = Dispatcher(engine, worker_name="bench-in-process")

    def run(self, tick: Tick, sample: int | None = None) -> Run:
        acquire = protocol.encode_batch("acquire", uuid.uuid4().hex, tick.acquire)
        update = protocol.encode_batch("update", uuid.uuid4().hex, tick.update) if tick.update else None
        started = time.perf_counter()
        reply, outcome = self.dispatcher.handle(acquire)
        if update is not None:
            _, update_outcome = self.dispatcher.handle(update)
            if update_outcome.error:
                raise RuntimeError(f"update batch failed: {update_outcome.error}")
        elapsed = time.perf_counter() - started
        if outcome.error:
            raise RuntimeError(f"acquire batch failed: {outcome.error}")
        return Run(elapsed, int(outcome.stats.get("leased", 0)))


class _PerRequest(Variant):
    """Requests one at a time; with a sample, time that many (spread over the batch) and
    scale each batch's time to its full size."""

    def acquire_one(self, request: AcquireHostRequest) -> Any:
        raise NotImplementedError

    def update_one(self, request: UpdateHostRequest) -> Any:
        raise NotImplementedError

    def _timed(self, requests: Sequence[Any], call: Any, sample: int | None) -> tuple[float, int, int]:
        picked = sample_indices(len(requests), sample)
        results = 0
        started = time.perf_counter()
        for i in picked:
            results += call(requests[i]) is not None
        elapsed = time.perf_counter() - started
        return elapsed * len(requests) / max(1, len(picked)), results, len(picked)

    def run(self, tick: Tick, sample: int | None = None) -> Run:
        seconds, leased, timed = self._timed(tick.acquire, self.acquire_one, sample)
        if tick.update:
            more, errors, timed_updates = self._timed(tick.update, self.update_one, sample)
            if errors:
                raise RuntimeError(f"{errors} update(s) refused")
            seconds += more
            timed += timed_updates
        scaled = timed < tick.requests
        if scaled:
            leased = round(leased * len(tick.acquire) / max(1, len(sample_indices(len(tick.acquire), sample))))
        return Run(seconds, leased, timed if scaled else None)


class PerRequestVariant(_PerRequest):
    name = "per-request"

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.client = RDBClient(amqp_url, timeout_s=TIMEOUT_S, queue=queue)

    def acquire_one(self, request: AcquireHostRequest) -> Any:
        (host,) = self.client.acquire_hosts([request])
        return host

    def update_one(self, request: UpdateHostRequest) -> Any:
        (error,) = self.client.update_hosts([request])
        return error

    def close(self) -> None:
        self.client.close()


class CeleryVariant(_PerRequest):
    name = "celery"

    def __init__(self, amqp_url: str, queue: str, database: str) -> None:
        from rdb_worker.bench import celery_app

        celery_app.app.conf.broker_url = amqp_url
        self.app = celery_app.app
        self.acquire_task = celery_app.acquire_host
        self.update_task = celery_app.update_host
        self.queue = queue
        self.database = database

    def acquire_one(self, request: AcquireHostRequest) -> Any:
        return self.acquire_task.apply_async((self.database, request.to_wire()), queue=self.queue).get(
            timeout=TIMEOUT_S
        )

    def update_one(self, request: UpdateHostRequest) -> Any:
        return self.update_task.apply_async((self.database, request.to_wire()), queue=self.queue).get(
            timeout=TIMEOUT_S
        )


# --- the floor ---------------------------------------------------------------------------

_AVAILABLE = (
    "SELECT h.id,"
    " (SELECT GROUP_CONCAT(l.label_id) FROM afe_hosts_labels l WHERE l.host_id = h.id{labels}) AS labels,"
    " (SELECT GROUP_CONCAT(a.aclgroup_id) FROM afe_acl_groups_hosts a WHERE a.host_id = h.id{acls}) AS acls"
    " FROM afe_hosts h WHERE h.leased = 0 AND h.locked = 0"
    " AND ((h.invalid = 0 AND (h.status IS NULL OR h.status = 'Ready')){pinned})"
)


def _ids(values: Any) -> str:
    return ",".join(str(int(v)) for v in sorted(values))


def _split(value: Any) -> frozenset[int]:
    return frozenset(int(x) for x in value.split(",")) if value else frozenset()


class FloorVariant(Variant):
    """One read, matching in memory with nothing but what picking needs, one UPDATE."""

    name = "floor"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self, tick: Tick, sample: int | None = None) -> Run:
        batch_id = uuid.uuid4().hex
        started = time.perf_counter()
        leased = self._acquire(tick.acquire, batch_id)
        by_payload: dict[frozenset[tuple[str, Any]], list[int]] = {}
        for request in tick.update:
            by_payload.setdefault(frozenset(request.payload.items()), []).append(request.host_id)
        if by_payload:
            with self.engine.begin() as conn:
                for payload, host_ids in by_payload.items():
                    columns = dict(payload)
                    sets = ", ".join(f"`{c}` = :{c}" for c in columns)
                    conn.execute(text(f"UPDATE afe_hosts SET {sets} WHERE id IN ({_ids(host_ids)})"), columns)
        return Run(time.perf_counter() - started, leased)

    def _acquire(self, requests: Sequence[AcquireHostRequest], batch_id: str) -> int:
        labels: set[int] = set()
        acls: set[int] = set()
        pinned: set[int] = set()
        for r in requests:
            labels |= r.deps | r.preferred_deps
            acls |= r.acls
            if r.host_id is not None:
                pinned.add(r.host_id)
        sql = _AVAILABLE.format(
            labels=f" AND l.label_id IN ({_ids(labels)})" if labels else " AND FALSE",
            acls=f" AND a.aclgroup_id IN ({_ids(acls)})" if acls else " AND FALSE",
            pinned=f" OR h.id IN ({_ids(pinned)})" if pinned else "",
        )
        with self.engine.begin() as conn:
            rows = conn.execute(text(sql)).all()
            chosen = self._choose(requests, rows)
            if not chosen:
                return 0
            result = conn.execute(
                text(
                    f"UPDATE afe_hosts SET leased = 1, leased_by = :b, leased_at = NOW(6) "
                    f"WHERE id IN ({_ids(chosen)}) AND leased = 0 AND locked = 0"
                ),
                {"b": batch_id},
            )
            return int(result.rowcount)

    @staticmethod
    def _choose(requests: Sequence[AcquireHostRequest], rows: Sequence[Any]) -> set[int]:
        host_labels: dict[int, frozenset[int]] = {}
        host_acls: dict[int, frozenset[int]] = {}
        label_hosts: dict[int, set[int]] = {}
        acl_hosts: dict[int, set[int]] = {}
        for host_id, label_csv, acl_csv in rows:
            host_labels[host_id] = ls = _split(label_csv)
            for label in ls:
                label_hosts.setdefault(label, set()).add(host_id)
            host_acls[host_id] = hs = _split(acl_csv)
            for acl in hs:
                acl_hosts.setdefault(acl, set()).add(host_id)
        taken: set[int] = set()
        for r in requests:  # validations: the host must be free (it was read) and fit
            h = r.host_id
            if h is not None and h not in taken and h in host_labels and r.deps <= host_labels[h] \
                    and r.acls & host_acls[h]:
                taken.add(h)
        # Acquisitions: one match per (deps, acls) kind, however many requests share it.
        need: Counter[tuple[frozenset[int], frozenset[int]]] = Counter(
            (r.deps, r.acls) for r in requests if r.host_id is None
        )
        for (deps, req_acls), count in need.items():
            hosts: set[int] = set()
            for acl in req_acls:
                hosts |= acl_hosts.get(acl, set())
            for dep in deps:
                hosts &= label_hosts.get(dep, set())
            for host in sorted(hosts - taken)[:count]:
                taken.add(host)
        return taken


def make_variant(name: str, *, amqp_url: str, queue: str, engine: Engine, database: str,
                 celery_queue: str) -> Variant:
    if name == "rdb":
        return RdbVariant(amqp_url, queue)
    if name == "in-process":
        return InProcessVariant(engine)
    if name == "per-request":
        return PerRequestVariant(amqp_url, queue)
    if name == "celery":
        return CeleryVariant(amqp_url, celery_queue, database)
    if name == "floor":
        return FloorVariant(engine)
    raise ValueError(f"unknown variant {name!r}")
