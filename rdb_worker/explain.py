"""Why a request gets no host: how many hosts survive each condition, in turn.

The acquire path answers "which hosts"; this answers "why not", with the same
conditions in the same terms (docs/debugging.md walks through an investigation).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from schema.tables import afe_acl_groups_hosts, afe_host_queue_entries, afe_hosts, afe_hosts_labels, afe_labels

h = afe_hosts


@dataclass
class LeasedHost:
    id: int
    hostname: str | None
    leased_by: str | None
    leased_at: dt.datetime | None
    active_jobs: list[int]
    status: str | None = None
    locked: bool = False
    invalid: bool = False


@dataclass
class Explanation:
    steps: list[tuple[str, int]] = field(default_factory=list)
    available: list[int] = field(default_factory=list)
    leased: list[LeasedHost] = field(default_factory=list)


def explain(conn: Connection, deps: Sequence[int], acls: Sequence[int], host_id: int | None = None) -> Explanation:
    out = Explanation()
    rows = {r.id: r for r in conn.execute(
        select(h.c.id, h.c.hostname, h.c.invalid, h.c.locked, h.c.leased, h.c.status, h.c.leased_by, h.c.leased_at)
    )}
    hosts = set(rows)
    if host_id is not None:
        hosts &= {host_id}
        out.steps.append((f"host id {host_id}", len(hosts)))
    else:
        out.steps.append(("all hosts", len(hosts)))
    names = dict(conn.execute(select(afe_labels.c.id, afe_labels.c.name).where(afe_labels.c.id.in_(list(deps)))).all())
    for dep in deps:
        carrying = set(conn.execute(
            select(afe_hosts_labels.c.host_id).where(afe_hosts_labels.c.label_id == dep)).scalars())
        hosts &= carrying
        out.steps.append((f"carries {names.get(dep, dep)}", len(hosts)))
    sharing = set(conn.execute(
        select(afe_acl_groups_hosts.c.host_id).where(afe_acl_groups_hosts.c.aclgroup_id.in_(list(acls)))
    ).scalars()) if acls else set()
    if host_id is not None and hosts and rows[host_id].invalid:
        out.steps.append(("shares an acl (waived: one-time invalid host)", len(hosts)))
    else:
        hosts &= sharing
        out.steps.append((f"shares an acl of {sorted(acls)}" if acls else "shares an acl (request has none)", len(hosts)))
    # Who holds the hosts that fit the request's labels and acls, whatever else stops
    # them (locked, not Ready): "why not" usually ends with "because X has it".
    leased = sorted(i for i in hosts if rows[i].leased)
    if host_id is None or not (hosts and rows[host_id].invalid):
        hosts = {i for i in hosts if not rows[i].invalid}
        out.steps.append(("not invalid", len(hosts)))
    hosts = {i for i in hosts if rows[i].locked == 0}
    out.steps.append(("not locked", len(hosts)))
    if host_id is None:
        hosts = {i for i in hosts if rows[i].status in (None, "Ready")}
        out.steps.append(("status Ready (or NULL)", len(hosts)))
    hosts = {i for i in hosts if not rows[i].leased}
    out.steps.append(("not leased", len(hosts)))
    out.available = sorted(hosts)
    jobs: dict[int, list[int]] = {}
    if leased:
        for hid, job in conn.execute(
            select(afe_host_queue_entries.c.host_id, afe_host_queue_entries.c.job_id).where(
                afe_host_queue_entries.c.host_id.in_(leased), afe_host_queue_entries.c.active == 1)
        ):
            jobs.setdefault(hid, []).append(job)
    out.leased = [
        LeasedHost(i, rows[i].hostname, rows[i].leased_by, rows[i].leased_at, sorted(jobs.get(i, [])),
                   rows[i].status, rows[i].locked is None or bool(rows[i].locked), bool(rows[i].invalid))
        for i in leased
    ]
    return out
