"""Turn a scheduler's pending host queue entries into rdb acquire requests.

What a job needs from a host is spread over half a dozen AFE tables (the HQE, its job,
the job's dependency labels, the owner's ACL groups, the suite's keyvals and the HQEs
its other children hold). A scheduler tick may hold thousands of pending HQEs, so
everything here is read in a fixed handful of queries keyed by id lists, whatever the
number of HQEs, and all of them inside one transaction so the requests of one call
describe one moment of the database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, func, select

from rdb_client.exceptions import InvalidRequestError
from rdb_client.requests import AcquireHostRequest
from schema.tables import (
    afe_acl_groups_users,
    afe_host_queue_entries,
    afe_job_keyvals,
    afe_jobs,
    afe_jobs_dependency_labels,
    afe_labels,
    afe_users,
)

log = logging.getLogger(__name__)

# Labels a host can be given by provisioning it before the job runs (install a build,
# flash firmware). A host without them still qualifies, so they must not filter hosts;
# they are passed as preferences, so that a host already carrying them, which saves
# the provisioning, is chosen first.
PROVISIONABLE_PREFIXES: tuple[str, ...] = (
    "cros-version:",
    "fw-version:",
    "fw-ro-version:",
    "fw-rw-version:",
    "cheets-version:",
)

SUITE_MIN_DUTS_KEY = "suite_min_duts"

# Keeps each IN (...) list, and so each statement, well under max_allowed_packet while
# still answering a whole tick in a few round trips.
ID_CHUNK = 5000

Id = TypeVar("Id", int, str)


def is_provisionable(label_name: str) -> bool:
    return label_name.startswith(PROVISIONABLE_PREFIXES)


def _chunks(items: Iterable[Id], size: int = ID_CHUNK) -> Iterator[list[Id]]:
    ordered = sorted(set(items))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


@dataclass(frozen=True, slots=True)
class _Entry:
    hqe_id: int
    job_id: int | None
    host_id: int | None
    meta_host: int | None
    meta_host_name: str | None
    owner: str | None
    priority: int
    parent_job_id: int


class JobQueryManager:
    """Builds AcquireHostRequests for HQEs straight from the AFE database.

    prejob_action_labels: dependency labels that ask for something to be done to the
    host before the job (a prejob action), rather than for a kind of host; no host
    carries them, so keeping them would make every such request unsatisfiable.
    """

    def __init__(self, db_url: str, *, prejob_action_labels: Iterable[str] = ()) -> None:
        if isinstance(prejob_action_labels, str):
            # A lone string would be split into characters and silently match nothing.
            raise TypeError("prejob_action_labels must be an iterable of label names, not a str")
        self._prejob_action_labels = frozenset(prejob_action_labels)
        self._engine: Engine = create_engine(db_url, pool_pre_ping=True, pool_recycle=3600)

    @property
    def prejob_action_labels(self) -> frozenset[str]:
        return self._prejob_action_labels

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> JobQueryManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def acquire_requests(self, hqe_ids: Sequence[int]) -> list[AcquireHostRequest]:
        """One request per id, in the order given (an id given twice gets two requests).

        Raises InvalidRequestError if any id is not an HQE, before building anything:
        a scheduler asking about an HQE that does not exist has lost track of its queue.
        """
        if not hqe_ids:
            return []
        bad = [i for i in hqe_ids if isinstance(i, bool) or not isinstance(i, int)]
        if bad:
            raise InvalidRequestError(f"HQE ids must be ints, got {bad!r}", field="hqe_ids")
        with self._engine.connect() as conn, conn.begin():
            entries = self._entries(conn, hqe_ids)
            missing = sorted({i for i in hqe_ids if i not in entries})
            if missing:
                raise InvalidRequestError(
                    f"no afe_host_queue_entries row for HQE id(s) {missing}", field="hqe_ids"
                )
            job_ids = {e.job_id for e in entries.values() if e.job_id is not None}
            deps = self._job_deps(conn, job_ids)
            acls = self._owner_acls(conn, {e.owner for e in entries.values() if e.owner is not None})
            parents = {e.parent_job_id for e in entries.values() if e.parent_job_id}
            min_duts = self._suite_min_duts(conn, parents)

        requests = []
        for hqe_id in hqe_ids:
            entry = entries[hqe_id]
            labels = dict(deps.get(entry.job_id, {})) if entry.job_id is not None else {}
            if entry.meta_host is not None:
                # A meta_host whose label row is gone stays a dep: no host matches it,
                # which is safer than silently widening the request to any host.
                labels[entry.meta_host] = entry.meta_host_name or ""
            required: set[int] = set()
            preferred: set[int] = set()
            for label_id, name in labels.items():
                if name in self._prejob_action_labels:
                    continue
                (preferred if is_provisionable(name) else required).add(label_id)
            requests.append(
                AcquireHostRequest(
                    host_id=entry.host_id,
                    deps=frozenset(required),
                    acls=frozenset(acls.get(entry.owner, ())) if entry.owner is not None else frozenset(),
                    priority=entry.priority,
                    preferred_deps=frozenset(preferred),
                    parent_job_id=entry.parent_job_id,
                    suite_min_duts=min_duts.get(entry.parent_job_id, 0),
                )
            )
        return requests

    # --- queries: each runs once per chunk of ids, never once per HQE ---------------

    def _entries(self, conn: Connection, hqe_ids: Iterable[int]) -> dict[int, _Entry]:
        q, j = afe_host_queue_entries, afe_jobs
        # Outer joins: an HQE whose job or meta_host label row is gone still gets a
        # request (a stricter one), rather than vanishing and looking like a bad id.
        stmt = select(
            q.c.id, q.c.job_id, q.c.host_id, q.c.meta_host, afe_labels.c.name,
            j.c.owner, j.c.priority, j.c.parent_job_id,
        ).select_from(
            q.outerjoin(j, j.c.id == q.c.job_id).outerjoin(afe_labels, afe_labels.c.id == q.c.meta_host)
        )
        entries: dict[int, _Entry] = {}
        for chunk in _chunks(hqe_ids):
            for row in conn.execute(stmt.where(q.c.id.in_(chunk))):
                entries[row.id] = _Entry(
                    hqe_id=row.id,
                    job_id=row.job_id,
                    host_id=row.host_id,
                    meta_host=row.meta_host,
                    meta_host_name=row.name,
                    owner=row.owner,
                    priority=row.priority or 0,
                    parent_job_id=row.parent_job_id or 0,
                )
        return entries

    def _job_deps(self, conn: Connection, job_ids: Iterable[int]) -> dict[int, dict[int, str]]:
        d = afe_jobs_dependency_labels
        stmt = select(d.c.job_id, d.c.label_id, afe_labels.c.name).join(
            afe_labels, afe_labels.c.id == d.c.label_id
        )
        deps: dict[int, dict[int, str]] = {}
        for chunk in _chunks(job_ids):
            for job_id, label_id, name in conn.execute(stmt.where(d.c.job_id.in_(chunk))):
                deps.setdefault(job_id, {})[label_id] = name
        return deps

    def _owner_acls(self, conn: Connection, owners: Iterable[str]) -> dict[str, set[int]]:
        g = afe_acl_groups_users
        stmt = select(afe_users.c.login, g.c.aclgroup_id).join(g, g.c.user_id == afe_users.c.id)
        acls: dict[str, set[int]] = {}
        for chunk in _chunks(owners):
            for login, acl_id in conn.execute(stmt.where(afe_users.c.login.in_(chunk))):
                acls.setdefault(login, set()).add(acl_id)
        return acls

    def _suite_min_duts(self, conn: Connection, parent_ids: Iterable[int]) -> dict[int, int]:
        """How many more hosts each suite still needs to reach its minimum.

        The minimum counts hosts the suite holds, not requests: hosts its children are
        already running on are subtracted, so a suite that has its minimum stops
        outbidding other suites for more.
        """
        parents = list(parent_ids)
        if not parents:
            return {}
        kv, q, j = afe_job_keyvals, afe_host_queue_entries, afe_jobs
        wanted: dict[int, int] = {}
        for chunk in _chunks(parents):
            rows = conn.execute(
                select(kv.c.job_id, kv.c.value)
                .where(kv.c.job_id.in_(chunk), kv.c.key == SUITE_MIN_DUTS_KEY)
                .order_by(kv.c.id)  # duplicated keyval: the newest row wins
            )
            for job_id, value in rows:
                try:
                    wanted[job_id] = int(value)
                except (TypeError, ValueError):
                    log.warning(
                        "suite %s has non-integer %s keyval %r; treating it as 0",
                        job_id, SUITE_MIN_DUTS_KEY, value,
                    )
                    wanted[job_id] = 0
        held: dict[int, int] = {}
        for chunk in _chunks(wanted):
            rows = conn.execute(
                select(j.c.parent_job_id, func.count(q.c.host_id.distinct()))
                .join(q, q.c.job_id == j.c.id)
                .where(
                    j.c.parent_job_id.in_(chunk),
                    q.c.active == 1,
                    q.c.complete == 0,
                    q.c.host_id.is_not(None),
                )
                .group_by(j.c.parent_job_id)
            )
            for parent_id, count in rows:
                held[parent_id] = int(count)
        return {parent: max(0, want - held.get(parent, 0)) for parent, want in wanted.items()}
