"""What each kind of batch does to the database, given an open transaction.

Handlers know nothing of AMQP or of wire encoding: they take decoded requests and a
SQLAlchemy connection inside the batch's transaction, and return results aligned with
the requests. The dispatcher owns the transaction, so a batch commits or rolls back
whole.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DataError, IntegrityError

from rdb_client.exceptions import (
    ColumnNotWritableError,
    InvalidRequestError,
    RDBException,
    UnknownColumnError,
    UnknownHostError,
    WrongTypeError,
)
from rdb_client.requests import AcquireHostRequest, HostRequest, ReleaseHostsRequest, UpdateHostRequest
from rdb_worker import allocation, queries
from schema.tables import afe_hosts

log = logging.getLogger(__name__)

# Rounds of re-planning when another worker leased some of our picks first.
LEASE_ROUNDS = 4
# A kind's first read takes what its requests need plus this much slack (other kinds of
# the batch may share hosts with it); a group that runs out reads 4x more, this often.
KIND_SLACK_MIN = 8
KIND_FETCH_ROUNDS = 6
# Below this much estimated per-kind query time, don't even count the lab.
KIND_QUERY_MIN_COST_S = 0.02
LABEL_SIZE_TTL_S = 300.0
DEFAULT_RELEASE_GRACE_S = 60.0


def _check_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))


def _check_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_str(max_len: int | None) -> Any:
    return lambda value: isinstance(value, str) and (max_len is None or len(value) <= max_len)


def _check_datetime(value: Any) -> bool:
    """A naive 'YYYY-MM-DD HH:MM:SS[.ffffff]': what a DATETIME column stores as it is."""
    if not isinstance(value, str):
        return False
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is None


def _check_text(value: Any) -> bool:
    return isinstance(value, str) and len(value.encode("utf-8")) <= 65535


# column -> (nullable, type check, type name for errors). ``id`` and the lease columns
# are deliberately absent: leases change only through acquire and release.
WRITABLE_COLUMNS: dict[str, tuple[bool, Any, str]] = {
    "hostname": (True, _check_str(255), "string of at most 255 characters"),
    "locked": (False, _check_bool, "bool"),
    "synch_id": (True, _check_int, "int"),
    "status": (True, _check_str(255), "string of at most 255 characters"),
    "invalid": (False, _check_bool, "bool"),
    "protection": (False, _check_int, "int"),
    "locked_by_id": (True, _check_int, "int"),
    "lock_time": (True, _check_datetime, "ISO datetime string"),
    "dirty": (False, _check_bool, "bool"),
    "lock_reason": (True, _check_text, "string of at most 65535 bytes"),
}
KNOWN_COLUMNS = frozenset(c.name for c in afe_hosts.columns)


@dataclass
class AcquireStats:
    requested: int = 0
    leased: int = 0
    unsatisfied: int = 0
    rounds: int = 0
    lost_races: int = 0
    refetches: int = 0
    full_reads: int = 0


@dataclass
class Handlers:
    """The per-kind logic, configured once per worker."""

    release_grace_s: float = DEFAULT_RELEASE_GRACE_S
    worker_name: str = "rdb-worker"
    last_stats: dict[str, Any] = field(default_factory=dict)
    _label_size: dict[int, int] = field(default_factory=dict)
    _label_size_at: dict[int, float] = field(default_factory=dict)

    def run(self, conn: Connection, kind: str, batch_id: str, requests: Sequence[Any]) -> list[Any]:
        """Run one decoded batch of ``kind`` in the caller's transaction."""
        handler = {
            "get": self.get_hosts,
            "acquire": self.acquire_hosts,
            "update": self.update_hosts,
            "release": self.release_hosts,
        }[kind]
        return handler(conn, batch_id, requests)

    def _label_sizes(self, conn: Connection, label_ids: set[int]) -> dict[int, int]:
        """Hosts per label, cached for LABEL_SIZE_TTL_S: only picks which label drives a
        kind's read (a stale size makes a read slower, never an answer wrong)."""
        now = time.monotonic()
        stale = {d for d in label_ids if now - self._label_size_at.get(d, -1e9) > LABEL_SIZE_TTL_S}
        if stale:
            for label, size in queries.label_sizes(conn, stale).items():
                self._label_size[label] = size
                self._label_size_at[label] = now
        return {d: self._label_size.get(d, 0) for d in label_ids}

    def _actor(self, batch_id: str) -> queries.Actor:
        return queries.Actor(batch_id=batch_id, worker=self.worker_name)

    # --- reads ---------------------------------------------------------------------
    def get_hosts(self, conn: Connection, batch_id: str, requests: Sequence[HostRequest]) -> list[Any]:
        infos = queries.host_infos(conn, (r.host_id for r in requests))
        self.last_stats = {"found": sum(r.host_id in infos for r in requests)}
        return [infos.get(r.host_id) for r in requests]

    # --- acquisitions --------------------------------------------------------------
    def acquire_hosts(
        self, conn: Connection, batch_id: str, requests: Sequence[AcquireHostRequest]
    ) -> list[Any]:
        stats = AcquireStats(requested=len(requests))
        actor = self._actor(batch_id)
        pinned = queries.load_pinned(conn, {r.host_id for r in requests if r.host_id is not None})

        assigned: list[int | None] = [None] * len(requests)
        held: set[int] = set()  # leased by this batch so far
        lost: set[int] = set()  # picked, but another transaction got there first
        open_indices = list(range(len(requests)))
        for _round in range(LEASE_ROUNDS):
            stats.rounds += 1
            todo = [requests[i] for i in open_indices]
            picks = self._plan(conn, todo, pinned, taken=held | lost, stats=stats)
            want_pinned = {p for p, r in zip(picks, todo) if p is not None and r.is_validation}
            want_free = {p for p, r in zip(picks, todo) if p is not None and not r.is_validation}
            got = queries.lease(conn, want_pinned, actor, pinned=True)
            got |= queries.lease(conn, want_free, actor, pinned=False)
            held |= got
            round_lost = (want_pinned | want_free) - got
            lost |= round_lost
            still_open = []
            for index, pick in zip(open_indices, picks):
                if pick is not None and pick in got:
                    assigned[index] = pick
                elif pick is not None:
                    still_open.append(index)  # lost a race: try again with a fresh view
            stats.lost_races += len(round_lost)
            open_indices = still_open
            if not open_indices:
                break
            # Pinned hosts that were lost are gone for good; only re-plan the others.
            open_indices = [i for i in open_indices if not requests[i].is_validation]
            if not open_indices:
                break
        infos = queries.host_infos(conn, held)
        stats.leased = len(held)
        stats.unsatisfied = sum(a is None for a in assigned)
        if stats.unsatisfied:
            log.info("batch %s: %d of %d acquisitions unsatisfied", batch_id, stats.unsatisfied, len(requests))
        self.last_stats = stats.__dict__.copy()
        return [infos[a] if a is not None else None for a in assigned]

    def _plan(
        self,
        conn: Connection,
        todo: Sequence[AcquireHostRequest],
        pinned: dict[int, allocation.PinnedHost],
        taken: set[int],
        stats: AcquireStats,
    ) -> list[int | None]:
        """Plan on a prefix of each kind's ranked hosts; read more only where a group ran out.

        A batch of very many distinct kinds on a modest lab is cheaper to plan on one read
        of the whole availability, matched in memory: the cost model picks.
        """
        need = Counter(allocation.kind_of(r) for r in todo if not r.is_validation)
        if len(need) * queries.KIND_QUERY_COST_S > KIND_QUERY_MIN_COST_S:
            available = queries.count_available(conn)
            if available * queries.FULL_READ_COST_PER_HOST_S < len(need) * queries.KIND_QUERY_COST_S:
                stats.full_reads += 1
                label_ids: set[int] = set()
                acl_ids: set[int] = set()
                for deps, acls, preferred in need:
                    label_ids |= deps | preferred
                    acl_ids |= acls
                candidates = queries.load_candidates(conn, label_ids, acl_ids)
                return allocation.plan(todo, candidates, pinned, taken=set(taken))
        limits = {kind: n + max(KIND_SLACK_MIN, n // 2) for kind, n in need.items()}
        sizes = self._label_sizes(conn, {d for deps, _acls, _pref in need for d in deps})
        lists = queries.load_kind_candidates(conn, limits, sizes)
        for _attempt in range(KIND_FETCH_ROUNDS):
            candidates = allocation.Candidates(
                kind_lists=lists, truncated={k for k, hosts in lists.items() if len(hosts) >= limits[k]}
            )
            exhausted: set[allocation.KindKey] = set()
            picks = allocation.plan(todo, candidates, pinned, taken=set(taken), exhausted=exhausted)
            if not exhausted:
                return picks
            stats.refetches += len(exhausted)
            for kind in exhausted:
                limits[kind] *= 4
            lists.update(queries.load_kind_candidates(conn, {k: limits[k] for k in exhausted}, sizes))
        return picks

    # --- updates -------------------------------------------------------------------
    def _validate_update(self, request: Any, existing: set[int]) -> RDBException | None:
        if isinstance(request, InvalidRequestError):
            return request
        assert isinstance(request, UpdateHostRequest)
        for column, value in request.payload.items():
            if column not in KNOWN_COLUMNS:
                return UnknownColumnError(f"afe_hosts has no column {column!r}")
            if column not in WRITABLE_COLUMNS:
                return ColumnNotWritableError(
                    f"column {column!r} may not be written through the rdb; writable: {sorted(WRITABLE_COLUMNS)}"
                )
            nullable, check, type_name = WRITABLE_COLUMNS[column]
            if value is None:
                if not nullable:
                    return WrongTypeError(f"column {column!r} may not be NULL")
            elif not check(value):
                return WrongTypeError(f"column {column!r} takes a {type_name}, got {type(value).__name__} {value!r}")
        if request.host_id not in existing:
            return UnknownHostError(f"no host with id {request.host_id}")
        return None

    def update_hosts(self, conn: Connection, batch_id: str, requests: Sequence[Any]) -> list[Any]:
        existing = queries.existing_host_ids(
            conn, {r.host_id for r in requests if isinstance(r, UpdateHostRequest)}
        )
        errors = [self._validate_update(r, existing) for r in requests]
        merged: dict[int, dict[str, Any]] = {}
        for request, error in zip(requests, errors):
            if error is None:
                merged.setdefault(request.host_id, {}).update(request.payload)
        by_payload: dict[frozenset[tuple[str, Any]], list[int]] = {}
        for host_id, payload in merged.items():
            by_payload.setdefault(frozenset(payload.items()), []).append(host_id)
        for payload_items, host_ids in by_payload.items():
            try:
                # A savepoint per statement: a value the database itself refuses (a
                # dangling locked_by_id, an int out of range) fails only its requests.
                with conn.begin_nested():
                    queries.update_hosts(conn, host_ids, dict(payload_items), self._actor(batch_id))
            except (IntegrityError, DataError) as exc:
                refused = set(host_ids)
                for index, request in enumerate(requests):
                    if errors[index] is None and request.host_id in refused:
                        errors[index] = WrongTypeError(
                            f"the database refused {dict(payload_items)} for host {request.host_id}: {exc.orig}"
                        )
                merged = {h: p for h, p in merged.items() if h not in refused}
        self.last_stats = {"updated_hosts": len(merged), "statements": len(by_payload), "errors": sum(e is not None for e in errors)}
        return [e.to_wire() if e is not None else None for e in errors]

    # --- releases ------------------------------------------------------------------
    def release_hosts(self, conn: Connection, batch_id: str, requests: Sequence[ReleaseHostsRequest]) -> list[Any]:
        (request,) = requests
        grace_s = self.release_grace_s if request.grace_s is None else request.grace_s
        released = queries.release(conn, grace_s, self._actor(batch_id))
        self.last_stats = {"released": len(released)}
        return [released]
