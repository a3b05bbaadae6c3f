"""Every SQL statement the worker runs, and the only place that takes row locks.

Two statements change leases, and both re-check the host's state in the same
statement that locks it, so a decision made on an earlier plain read can never lease a
host someone else took, or that the frontend locked, in between:
- ``lease``: a locking read of afe_hosts alone (``FOR UPDATE SKIP LOCKED``, re-checking
  leased/locked/invalid/status), then an UPDATE of exactly the rows it locked, checked by
  rowcount (MariaDB has no UPDATE ... RETURNING);
- ``release``: a locking read of afe_hosts alone (``FOR UPDATE SKIP LOCKED``; a locking
  read over a join would lock label and HQE rows too), then an UPDATE of what it locked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, exists, func, literal_column, or_, select, text, update

from rdb_worker.allocation import Candidates, KindKey, PinnedHost
from schema.tables import (
    afe_acl_groups_hosts,
    afe_host_queue_entries,
    afe_hosts,
    afe_hosts_labels,
    afe_special_tasks,
    rdb_batches,
    rdb_host_history,
)

h = afe_hosts


@dataclass(frozen=True)
class Actor:
    """Who makes a change, for the history: the batch (or cycle, or admin) and the worker."""

    batch_id: str
    worker: str


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def record_history(
    conn: Connection, actor: Actor, action: str, changes: Iterable[tuple[int, str, Any, Any]]
) -> None:
    """Append (host_id, field, old, new) rows in the caller's transaction."""
    rows = [
        {"host_id": host_id, "action": action, "field": field, "old_value": _text(old), "new_value": _text(new),
         "batch_id": actor.batch_id, "worker": actor.worker}
        for host_id, field, old, new in changes
    ]
    if rows:
        conn.execute(rdb_host_history.insert().values(created_at=NOW), rows)
READY = or_(h.c.status.is_(None), h.c.status == "Ready")
ACQUIRABLE = and_(h.c.leased == 0, h.c.locked == 0, h.c.invalid == 0, READY)
NOW = func.now(6)


KIND_QUERIES_PER_STATEMENT = 400
# Rough costs measured on MariaDB 10.11 here (docs/performance.md): a per-kind query
# costs about half a millisecond of server time; reading the whole availability (ids,
# labels, acls) about 20 microseconds per available host. The worker takes the cheaper.
KIND_QUERY_COST_S = 0.0005
FULL_READ_COST_PER_HOST_S = 0.00002


def count_available(conn: Connection) -> int:
    """Hosts free to acquire: cheap (the (leased, locked) index) and sizes the read strategy."""
    return int(conn.execute(select(func.count()).select_from(h).where(ACQUIRABLE)).scalar() or 0)


def load_candidates(conn: Connection, label_ids: Collection[int], acl_ids: Collection[int]) -> Candidates:
    """All acquirable hosts, with only the labels and acls this batch asks about.

    The cheaper read for batches of very many distinct kinds on a modest lab; matching
    then happens in memory (allocation._matching).
    """
    available = set(conn.execute(select(h.c.id).where(ACQUIRABLE)).scalars())
    candidates = Candidates(available=available)
    if label_ids:
        for label_id, host_id in conn.exec_driver_sql(
            f"SELECT label_id, host_id FROM afe_hosts_labels WHERE label_id IN ({_ids(label_ids)})"
        ):
            if host_id in available:
                candidates.label_hosts.setdefault(label_id, set()).add(host_id)
    if acl_ids:
        for acl_id, host_id in conn.exec_driver_sql(
            f"SELECT aclgroup_id, host_id FROM afe_acl_groups_hosts WHERE aclgroup_id IN ({_ids(acl_ids)})"
        ):
            if host_id in available:
                candidates.acl_hosts.setdefault(acl_id, set()).add(host_id)
    return candidates


def _ids(values: Iterable[int]) -> str:
    """Inline an id list: ints validated at request construction, so no quoting issue,
    and a 2,000-kind UNION stays one short statement instead of 10,000 bound params."""
    return ",".join(str(int(v)) for v in sorted(values))


def _kind_select(index: int, kind: KindKey, limit: int, drive_label: int | None) -> str:
    """One kind's ranked candidates, written so MariaDB walks the driving label's index
    (label_id, host_id) in host order and stops at the LIMIT, probing every other
    condition by unique key. Left to itself the optimizer materialised the acl
    semi-join, a scan of most of the lab per query."""
    deps, acls, preferred = kind
    acquirable = "h.leased = 0 AND h.locked = 0 AND h.invalid = 0 AND (h.status IS NULL OR h.status = 'Ready')"
    score = (
        f"(SELECT COUNT(*) FROM afe_hosts_labels p WHERE p.host_id = h.id AND p.label_id IN ({_ids(preferred)}))"
        if preferred else "0"
    )
    if drive_label is None:
        source = "afe_acl_groups_hosts a STRAIGHT_JOIN afe_hosts h ON h.id = a.host_id"
        where = f"a.aclgroup_id IN ({_ids(acls)})"
        key = "a.host_id"
    else:
        joins = ["afe_hosts_labels hl STRAIGHT_JOIN afe_hosts h ON h.id = hl.host_id"]
        joins += [
            f"STRAIGHT_JOIN afe_hosts_labels d{n} ON d{n}.host_id = hl.host_id AND d{n}.label_id = {int(d)}"
            for n, d in enumerate(sorted(deps - {drive_label}))
        ]
        joins.append(f"STRAIGHT_JOIN afe_acl_groups_hosts a ON a.host_id = hl.host_id AND a.aclgroup_id IN ({_ids(acls)})")
        source = " ".join(joins)
        where = f"hl.label_id = {int(drive_label)}"
        key = "hl.host_id"
    return (
        f"(SELECT {index} AS k, {key} AS id, {score} AS score FROM {source} WHERE {where} AND {acquirable} "
        f"GROUP BY {key} ORDER BY score DESC, {key} LIMIT {int(limit)})"
    )


def _rarest(deps: frozenset[int], label_size: Mapping[int, int] | None) -> int | None:
    if not deps:
        return None
    sizes = label_size or {}
    return min(deps, key=lambda d: (sizes.get(d, 0), d))


def label_sizes(conn: Connection, label_ids: Collection[int]) -> dict[int, int]:
    """Hosts per label (index-only count): picks each kind's rarest label to drive its read."""
    if not label_ids:
        return {}
    rows = conn.exec_driver_sql(
        f"SELECT label_id, COUNT(*) FROM afe_hosts_labels WHERE label_id IN ({_ids(label_ids)}) GROUP BY label_id"
    )
    sizes = dict.fromkeys(label_ids, 0)
    sizes.update({int(label): int(n) for label, n in rows})
    return sizes


def load_kind_candidates(
    conn: Connection, limits: Mapping[KindKey, int], label_size: Mapping[int, int] | None = None
) -> dict[KindKey, list[int]]:
    """For each request kind, its first ``limit`` acquirable matching hosts, ranked.

    Rows read grow with what the batch asks for, not with the lab: a tick over 100,000
    hosts reads about as much as one over 1,000. The acquirability conditions here are
    an optimisation only: ``lease`` re-checks them under the row lock.
    """
    kinds = [(k, n) for k, n in limits.items() if k[1] and n > 0]  # no acls: matches nothing
    out: dict[KindKey, list[int]] = {k: [] for k in limits}
    for start in range(0, len(kinds), KIND_QUERIES_PER_STATEMENT):
        chunk = kinds[start:start + KIND_QUERIES_PER_STATEMENT]
        sql = " UNION ALL ".join(
            _kind_select(i, kind, n, _rarest(kind[0], label_size)) for i, (kind, n) in enumerate(chunk)
        )
        scored: dict[int, list[tuple[int, int]]] = {}
        for index, host_id, score in conn.exec_driver_sql(sql):
            scored.setdefault(index, []).append((-int(score), host_id))
        for index, rows in scored.items():
            out[chunk[index][0]] = [host_id for _, host_id in sorted(rows)]
    return out


def load_pinned(conn: Connection, host_ids: Collection[int]) -> dict[int, PinnedHost]:
    """State, labels and acls of hosts that validation requests name."""
    if not host_ids:
        return {}
    ids = sorted(host_ids)
    labels: dict[int, set[int]] = {}
    for host_id, label_id in conn.execute(
        select(afe_hosts_labels.c.host_id, afe_hosts_labels.c.label_id).where(afe_hosts_labels.c.host_id.in_(ids))
    ):
        labels.setdefault(host_id, set()).add(label_id)
    acls: dict[int, set[int]] = {}
    for host_id, acl_id in conn.execute(
        select(afe_acl_groups_hosts.c.host_id, afe_acl_groups_hosts.c.aclgroup_id).where(
            afe_acl_groups_hosts.c.host_id.in_(ids)
        )
    ):
        acls.setdefault(host_id, set()).add(acl_id)
    pinned = {}
    for row in conn.execute(select(h.c.id, h.c.leased, h.c.locked, h.c.invalid).where(h.c.id.in_(ids))):
        pinned[row.id] = PinnedHost(
            id=row.id,
            leased=bool(row.leased),
            # NULL locked/invalid: unknown; treat as the unsafe answer.
            locked=row.locked is None or bool(row.locked),
            invalid=bool(row.invalid),
            labels=frozenset(labels.get(row.id, ())),
            acls=frozenset(acls.get(row.id, ())),
        )
    return pinned


def lease(conn: Connection, host_ids: Collection[int], actor: Actor, *, pinned: bool) -> set[int]:
    """Lease what is still free of ``host_ids``; returns the subset this call leased.

    Pinned (validation) hosts skip the invalid/status checks, as validation does; every
    other host must still be acquirable at the moment its row is locked.
    """
    if not host_ids:
        return set()
    ids = sorted(host_ids)
    batch_id = actor.batch_id
    still_free = and_(h.c.leased == 0, h.c.locked == 0) if pinned else ACQUIRABLE
    # Lock what is still free, skipping rows another transaction holds: a worker racing
    # us for the same hosts costs a re-plan, never a lock wait. Only afe_hosts rows are
    # locked (no join), and the conditions are re-read under the lock.
    # FORCE INDEX: left alone, MariaDB reads the (leased, locked) index, i.e. every free
    # host of the lab, to find the few hundred named by id.
    got = set(
        conn.execute(
            select(h.c.id)
            .with_hint(h, "FORCE INDEX (PRIMARY)", "mysql")
            .where(h.c.id.in_(ids), still_free)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if got:
        result = conn.execute(
            update(h).where(h.c.id.in_(sorted(got))).values(leased=1, leased_by=batch_id, leased_at=NOW)
        )
        if result.rowcount != len(got):
            raise RuntimeError(f"leased {result.rowcount} of {len(got)} hosts locked for batch {batch_id}")
        # One INSERT ... SELECT, not a row per host from Python: a 2,000-host tick's history
        # costs one statement.
        conn.execute(
            text(
                "INSERT INTO rdb_host_history (host_id, action, field, old_value, new_value, batch_id, worker, "
                "created_at) SELECT id, 'lease', 'leased_by', NULL, leased_by, leased_by, :worker, NOW(6) "
                f"FROM afe_hosts WHERE id IN ({_ids(got)}) AND leased_by = :batch"
            ),
            {"worker": actor.worker, "batch": batch_id},
        )
    return got


LABEL_SEPARATOR = "\x1f"


def host_infos(conn: Connection, host_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """What a client gets for a host: its row, its label names and platform, its acl ids.

    Two statements whatever the number of hosts: the host rows with their labels folded
    in by GROUP_CONCAT, then the acl ids.
    """
    ids = sorted(set(host_ids))
    if not ids:
        return {}
    conn.exec_driver_sql("SET SESSION group_concat_max_len = 1048576")
    id_list = _ids(ids)
    infos: dict[int, dict[str, Any]] = {}
    rows = conn.exec_driver_sql(
        "SELECT h.id, h.hostname, h.status, h.locked, h.leased, h.invalid, h.protection, h.dirty, h.lock_reason, "
        f"GROUP_CONCAT(l.name ORDER BY l.name SEPARATOR '{LABEL_SEPARATOR}'), "
        "MAX(CASE WHEN l.platform THEN l.name END) "
        "FROM afe_hosts h LEFT JOIN afe_hosts_labels hl ON hl.host_id = h.id "
        "LEFT JOIN afe_labels l ON l.id = hl.label_id "
        f"WHERE h.id IN ({id_list}) GROUP BY h.id"
    )
    for host_id, hostname, status, locked, leased, invalid, protection, dirty, reason, labels, platform in rows:
        infos[host_id] = {
            "id": host_id,
            "hostname": hostname,
            "status": status,
            "locked": locked is None or bool(locked),  # as validation reads it
            "leased": bool(leased),
            "invalid": bool(invalid),
            "protection": protection,
            "dirty": bool(dirty),
            "lock_reason": reason,
            "labels": labels.split(LABEL_SEPARATOR) if labels else [],
            "acls": [],
            "platform": platform,
        }
    for host_id, acl_id in conn.exec_driver_sql(
        f"SELECT host_id, aclgroup_id FROM afe_acl_groups_hosts WHERE host_id IN ({id_list}) "
        "ORDER BY host_id, aclgroup_id"
    ):
        info = infos.get(host_id)
        if info is not None:
            info["acls"].append(acl_id)
    return infos


def existing_host_ids(conn: Connection, host_ids: Collection[int]) -> set[int]:
    if not host_ids:
        return set()
    return set(conn.execute(select(h.c.id).where(h.c.id.in_(sorted(host_ids)))).scalars())


def update_hosts(conn: Connection, host_ids: Collection[int], payload: Mapping[str, Any], actor: Actor) -> None:
    """One UPDATE for hosts that get the same payload; old values go to the history."""
    ids = sorted(host_ids)
    columns = sorted(payload)
    old = {row[0]: row[1:] for row in conn.execute(select(h.c.id, *(h.c[c] for c in columns)).where(h.c.id.in_(ids)))}
    conn.execute(update(h).where(h.c.id.in_(ids)).values(**payload))
    record_history(
        conn, actor, "update",
        ((i, c, old[i][n], payload[c]) for i in ids if i in old for n, c in enumerate(columns)),
    )


def _idle_lease_conditions(grace_s: float) -> list[Any]:
    old_enough = or_(
        h.c.leased_at.is_(None),
        h.c.leased_at < func.timestampadd(literal_column("MICROSECOND"), -int(grace_s * 1_000_000), NOW),
    )
    return [h.c.leased == 1, h.c.locked == 0, READY, old_enough]


def release(conn: Connection, grace_s: float, actor: Actor) -> list[int]:
    """Free idle leased hosts older than the grace period; return their ids ascending."""
    q, t = afe_host_queue_entries, afe_special_tasks
    active_hqe = exists().where(q.c.host_id == h.c.id, q.c.active == 1)
    pending_task = exists().where(t.c.host_id == h.c.id, t.c.is_complete == 0)
    conditions = _idle_lease_conditions(grace_s)
    candidate_ids = list(
        conn.execute(select(h.c.id).where(*conditions, ~active_hqe, ~pending_task)).scalars()
    )
    if not candidate_ids:
        return []
    holders = dict(
        conn.execute(
            select(h.c.id, h.c.leased_by)
            .where(h.c.id.in_(candidate_ids), *conditions)
            .with_for_update(skip_locked=True)
        ).all()
    )
    locked_ids = list(holders)
    if not locked_ids:
        return []
    # Rows are ours now; re-check what lives in other tables before freeing them.
    busy = set(
        conn.execute(
            select(q.c.host_id).where(q.c.host_id.in_(locked_ids), q.c.active == 1)
        ).scalars()
    ) | set(
        conn.execute(
            select(t.c.host_id).where(t.c.host_id.in_(locked_ids), t.c.is_complete == 0)
        ).scalars()
    )
    free_ids = sorted(set(locked_ids) - busy)
    if free_ids:
        # History first, in one INSERT ... SELECT (a lab's first release frees every host).
        conn.execute(
            text(
                "INSERT INTO rdb_host_history (host_id, action, field, old_value, new_value, batch_id, worker, "
                "created_at) SELECT id, 'release', 'leased_by', leased_by, NULL, :batch, :worker, NOW(6) "
                f"FROM afe_hosts WHERE id IN ({_ids(free_ids)})"
            ),
            {"worker": actor.worker, "batch": actor.batch_id},
        )
        conn.execute(update(h).where(h.c.id.in_(free_ids)).values(leased=0, leased_by=None, leased_at=None))
    return free_ids


def stored_reply(conn: Connection, batch_id: str) -> bytes | None:
    return conn.execute(select(rdb_batches.c.reply).where(rdb_batches.c.batch_id == batch_id)).scalar()


def store_reply(conn: Connection, batch_id: str, kind: str, reply: bytes) -> None:
    conn.execute(rdb_batches.insert().values(batch_id=batch_id, kind=kind, reply=reply, created_at=NOW))


PRUNABLE_TABLES = frozenset({"rdb_batches", "rdb_host_history"})


def prune(conn: Connection, table: str, retention_s: float, limit: int = 10_000) -> int:
    """Delete at most ``limit`` rows of one of the rdb's own tables older than the
    retention: bounded work per release cycle, however far behind pruning is."""
    if table not in PRUNABLE_TABLES:
        raise ValueError(f"not a prunable table: {table!r}")
    result = conn.execute(
        text(f"DELETE FROM {table} WHERE created_at < NOW(6) - INTERVAL :retention_s SECOND LIMIT :limit"),
        {"retention_s": int(retention_s), "limit": limit},
    )
    return result.rowcount
