"""What a tick asks for: the workloads of issue 4, built from a seeded lab.

A lab comes from ``rdb_client.sim.seed_lab``: hosts spread over boards x pools, each in
one of two acl groups the scheduler shares (every fifth also in a restricted one), a
third of them carrying a build label. A workload turns such a lab into a ``Tick``: the
acquire batch and, for ``mixed``, the update batch that follows it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from rdb_client.requests import AcquireHostRequest, UpdateHostRequest
from rdb_client.sim import LabInfo

SUITE_KINDS = 20
VALIDATION_FRACTION = 0.10
UPDATE_FRACTION = 0.05

WORKLOADS = ("suite-heavy", "all-distinct", "mixed", "lab-growth", "scale-out")

DESCRIPTIONS = {
    "suite-heavy": "N acquire requests in 20 distinct (deps, acls) kinds (suites: board+pool, a suite "
    "minimum), on the middle lab size",
    "all-distinct": "N acquire requests, no two alike (board, pool, build, acls, priority and "
    "preferred deps vary), on the middle lab size",
    "mixed": "N acquire requests of which 10% validate a pinned host, then an update batch for "
    "5% of the hosts (status), on the middle lab size",
    "lab-growth": "suite-heavy at each lab size",
    "scale-out": "4 publishers send batches of 200 suite requests for a fixed time to 1, then 2 "
    "worker processes; requests/s and a database check that no host was leased twice",
}


@dataclass
class Tick:
    """One scheduler tick's batches."""

    acquire: list[AcquireHostRequest]
    update: list[UpdateHostRequest] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.acquire) + len(self.update)


def _suite_kinds(lab: LabInfo, kinds: int) -> list[tuple[frozenset[int], int]]:
    """(deps, parent_job_id) of ``kinds`` suites: board i with pool i mod pools."""
    out = []
    for i in range(kinds):
        board = lab.boards[i % len(lab.boards)]
        pool = lab.pools[i % len(lab.pools)]
        out.append((frozenset({lab.label_id(board), lab.label_id(pool)}), 1000 + i))
    return out


def suite_heavy(lab: LabInfo, requests: int, kinds: int = SUITE_KINDS) -> Tick:
    """``requests`` acquisitions in ``kinds`` kinds, interleaved (request i is kind i mod kinds)."""
    acls = frozenset(lab.sim_acls)
    shapes = _suite_kinds(lab, kinds)
    out = []
    for i in range(requests):
        deps, parent = shapes[i % kinds]
        out.append(
            AcquireHostRequest(
                deps=deps, acls=acls, priority=10 * (1 + (i % kinds) % 5), parent_job_id=parent, suite_min_duts=2
            )
        )
    return Tick(out)


def all_distinct(lab: LabInfo, requests: int) -> Tick:
    """``requests`` acquisitions, pairwise different (priority is unique; deps/acls cycle)."""
    versions = [None, *(lab.label_id(v) for v in lab.versions)]
    acl_sets = [frozenset({a}) for a in lab.sim_acls] + [frozenset(lab.sim_acls)]
    shapes = list(itertools.product(lab.boards, lab.pools, versions, acl_sets))
    out = []
    for i in range(requests):
        board, pool, version, acls = shapes[i % len(shapes)]
        deps = {lab.label_id(board), lab.label_id(pool)}
        preferred: frozenset[int] = frozenset()
        if version is not None:
            if i % 2:
                deps.add(version)
            else:
                preferred = frozenset({version})
        out.append(AcquireHostRequest(deps=frozenset(deps), acls=acls, priority=i, preferred_deps=preferred))
    return Tick(out)


def mixed(lab: LabInfo, requests: int, kinds: int = SUITE_KINDS) -> Tick:
    """Suite requests with every tenth position a validation of a pinned host, then an
    update batch setting ``status`` on 5% of the hosts (every 20th)."""
    validations = int(requests * VALIDATION_FRACTION)
    step = max(1, len(lab.host_ids) // max(1, validations))
    pinned = lab.host_ids[::step][:validations]
    base = suite_heavy(lab, requests - len(pinned), kinds).acquire
    acls = frozenset(lab.sim_acls)
    out: list[AcquireHostRequest] = []
    pins = iter(pinned)
    stride = max(1, round(1 / VALIDATION_FRACTION))
    rest = iter(base)
    for i in range(requests):
        host = next(pins, None) if i % stride == stride - 1 else None
        if host is not None:
            out.append(
                AcquireHostRequest(host_id=host, deps=frozenset({lab.label_id(lab.host_board[host])}), acls=acls,
                                   priority=50)
            )
        else:
            nxt = next(rest, None)
            if nxt is None:
                nxt = AcquireHostRequest(host_id=next(pins), acls=acls, priority=50)
            out.append(nxt)
    updates = max(1, int(len(lab.host_ids) * UPDATE_FRACTION))
    ustep = max(1, len(lab.host_ids) // updates)
    update = [UpdateHostRequest(h, {"status": "Running"}) for h in lab.host_ids[1::ustep][:updates]]
    return Tick(out, update)


def build(name: str, lab: LabInfo, requests: int, kinds: int = SUITE_KINDS) -> Tick:
    if name in ("suite-heavy", "lab-growth"):
        return suite_heavy(lab, requests, kinds)
    if name == "all-distinct":
        return all_distinct(lab, requests)
    if name == "mixed":
        return mixed(lab, requests, kinds)
    raise ValueError(f"unknown tick workload {name!r}")


def sample_indices(total: int, sample: int | None) -> list[int]:
    """Evenly spread positions: a sample that has the batch's mix of kinds."""
    if sample is None or sample >= total:
        return list(range(total))
    step = total / sample
    return sorted({int(i * step) for i in range(sample)})
