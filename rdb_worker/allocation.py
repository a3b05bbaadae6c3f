"""Choosing hosts for a batch of acquisitions, in memory, with no database in sight.

The database is read once per batch (available hosts and the labels and acls that
matter to this batch); every matching, ordering and suite-minimum decision is made here
on sets, then leased in one statement. That keeps a 2,000-request tick at a handful of
queries whatever its shape, and makes the rules unit-testable.

Rules (docs/protocol.md has them for clients):
- identical requests coalesce (collections.Counter) into one group served ``count`` times;
- validations (host_id set) go first, by priority then position;
- acquisitions are ordered by priority desc, parent_job_id asc, first position; a first
  pass gives each suite up to its suite_min_duts, a second pass fills what is left;
- among matching hosts, more preferred_deps first, then lowest id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rdb_client.requests import AcquireHostRequest


KindKey = tuple[frozenset[int], frozenset[int], frozenset[int]]


def kind_of(request: AcquireHostRequest) -> KindKey:
    """What decides which hosts match a request and in which order: deps, acls, preferences."""
    return (request.deps, request.acls, request.preferred_deps)


@dataclass
class Candidates:
    """The batch's view of the lab, in one of two forms.

    - ``kind_lists``: per request kind, its matching acquirable hosts already ranked
      (the worker reads these with one query per batch); a kind in ``truncated`` holds
      only a prefix of its hosts, and ``plan`` reports it if a group runs past its end.
    - ``available`` with ``label_hosts``/``acl_hosts``: the sets to match in memory
      (used by unit tests and tools); they need only the labels and acls asked about.
    """

    available: set[int] = field(default_factory=set)
    label_hosts: dict[int, set[int]] = field(default_factory=dict)
    acl_hosts: dict[int, set[int]] = field(default_factory=dict)
    kind_lists: dict[KindKey, list[int]] | None = None
    truncated: set[KindKey] = field(default_factory=set)


@dataclass(frozen=True)
class PinnedHost:
    """What validation needs to know of a host a request names by id."""

    id: int
    leased: bool
    locked: bool
    invalid: bool
    labels: frozenset[int]
    acls: frozenset[int]


@dataclass
class _Group:
    request: AcquireHostRequest
    indices: list[int]
    granted: list[int] = field(default_factory=list)
    ranked: list[int] | None = None
    cursor: int = 0

    @property
    def missing(self) -> int:
        return len(self.indices) - len(self.granted)


def coalesce(requests: Sequence[AcquireHostRequest]) -> tuple[Counter[AcquireHostRequest], dict[AcquireHostRequest, list[int]]]:
    """Count identical requests, and remember where each copy sits in the batch."""
    counts: Counter[AcquireHostRequest] = Counter(requests)
    positions: dict[AcquireHostRequest, list[int]] = {}
    for index, request in enumerate(requests):
        positions.setdefault(request, []).append(index)
    return counts, positions


def validation_ok(request: AcquireHostRequest, host: PinnedHost | None) -> bool:
    """The pinned host is free and fits; an invalid (one-time) host skips the acl check."""
    if host is None or host.leased or host.locked:
        return False
    if not request.deps <= host.labels:
        return False
    return host.invalid or bool(request.acls & host.acls)


_EMPTY: frozenset[int] = frozenset()


def _matching(request: AcquireHostRequest, candidates: Candidates) -> set[int]:
    """Hosts carrying every dep and sharing an acl, starting from the rarest label.

    Set intersections cost the size of the smaller side, so starting from the rarest dep
    (a board has a few hundred hosts, an acl may have the whole lab) keeps a batch of
    2,000 distinct requests to a few hundred set operations each, not 2,000 lab-sized copies.
    """
    if not request.acls:
        return set()
    acl_sets = [candidates.acl_hosts.get(a, _EMPTY) for a in request.acls]
    dep_sets = sorted((candidates.label_hosts.get(d, _EMPTY) for d in request.deps), key=len)
    if not dep_sets:
        hosts: set[int] = set().union(*acl_sets) & candidates.available
        return hosts
    hosts = set(dep_sets[0]) if len(dep_sets[0]) <= len(candidates.available) else set(candidates.available)
    hosts &= candidates.available
    for deps in dep_sets[1:]:
        if not hosts:
            return hosts
        hosts &= deps
    if len(acl_sets) == 1:
        hosts &= acl_sets[0]
    else:
        hosts = {h for h in hosts if any(h in acls for acls in acl_sets)}
    return hosts


def _rank(request: AcquireHostRequest, hosts: set[int], candidates: Candidates) -> list[int]:
    if not request.preferred_deps:
        return sorted(hosts)
    preferred = [candidates.label_hosts.get(p, set()) for p in request.preferred_deps]
    return sorted(hosts, key=lambda h: (-sum(h in s for s in preferred), h))


def plan(
    requests: Sequence[AcquireHostRequest],
    candidates: Candidates,
    pinned: dict[int, PinnedHost],
    taken: set[int] | None = None,
    exhausted: set[KindKey] | None = None,
) -> list[int | None]:
    """Pick a host (or None) for every request, aligned with ``requests``.

    ``taken`` hosts are never picked (hosts other rounds already hold); it is updated.
    ``exhausted`` collects the truncated kinds a group ran out of: the caller reads more
    of them and plans again, so the answer is the one the whole lab would have given.
    """
    taken = set() if taken is None else taken
    ranked_by_kind: dict[KindKey, list[int]] = {}

    def ranked_for(request: AcquireHostRequest) -> list[int]:
        kind = kind_of(request)
        ranked = ranked_by_kind.get(kind)
        if ranked is None:
            if candidates.kind_lists is not None:
                ranked = candidates.kind_lists.get(kind, [])
            else:
                ranked = _rank(request, _matching(request, candidates), candidates)
            ranked_by_kind[kind] = ranked
        return ranked

    result: list[int | None] = [None] * len(requests)
    counts, positions = coalesce(requests)
    groups = [_Group(request, positions[request]) for request in counts]

    validations = sorted(
        (g for g in groups if g.request.is_validation),
        key=lambda g: (-g.request.priority, g.indices[0]),
    )
    for group in validations:
        host_id = group.request.host_id
        assert host_id is not None
        if host_id not in taken and validation_ok(group.request, pinned.get(host_id)):
            taken.add(host_id)
            result[group.indices[0]] = host_id

    acquisitions = sorted(
        (g for g in groups if not g.request.is_validation),
        key=lambda g: (-g.request.priority, g.request.parent_job_id, g.indices[0]),
    )

    def take(group: _Group, wanted: int) -> int:
        if group.ranked is None:
            group.ranked = ranked_for(group.request)
        got = 0
        ranked = group.ranked
        while got < wanted and group.cursor < len(ranked):
            host = ranked[group.cursor]
            group.cursor += 1
            if host in taken:
                continue
            taken.add(host)
            group.granted.append(host)
            got += 1
        if got < wanted and exhausted is not None and kind_of(group.request) in candidates.truncated:
            exhausted.add(kind_of(group.request))
        return got

    suite_min: dict[int, int] = {}
    for group in acquisitions:
        parent = group.request.parent_job_id
        if parent:
            suite_min[parent] = max(suite_min.get(parent, 0), group.request.suite_min_duts)
    suite_got: dict[int, int] = dict.fromkeys(suite_min, 0)

    for group in acquisitions:  # first pass: suite minimums
        parent = group.request.parent_job_id
        if not parent:
            continue
        lacking = suite_min[parent] - suite_got[parent]
        if lacking > 0:
            suite_got[parent] += take(group, min(lacking, group.missing))
    for group in acquisitions:  # second pass: everything else
        if group.missing:
            take(group, group.missing)
    for group in acquisitions:
        for index, host in zip(group.indices, group.granted):
            result[index] = host
    return result
