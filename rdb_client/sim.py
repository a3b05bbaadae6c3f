"""rdb-sim: a reference scheduler that drives the rdb the way monitor_db's tick does.

It exists to show, and measure, the intended use of the client: one release, one
acquire batch built by JobQueryManager and one update batch per tick, HQEs marked
active in the same tick they got a host (that is what keeps the next release from
freeing the host). The seeding helpers double as the benchmarks' lab generator, hence
bulk inserts and a progress bar.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, and_, bindparam, create_engine, exists, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from rdb_client.client import RDBClient
from rdb_client.exceptions import RDBException
from rdb_client.jobs import PROVISIONABLE_PREFIXES, JobQueryManager
from rdb_client.protocol import DEFAULT_MAX_REQUESTS, DEFAULT_QUEUE
from rdb_client.textable import format_table
from rdb_client.requests import AcquireHostRequest, UpdateHostRequest
from schema.tables import (
    afe_acl_groups,
    afe_acl_groups_hosts,
    afe_acl_groups_users,
    afe_host_queue_entries,
    afe_hosts,
    afe_hosts_labels,
    afe_job_keyvals,
    afe_jobs,
    afe_jobs_dependency_labels,
    afe_labels,
    afe_users,
)

log = logging.getLogger(__name__)

SIM_USER = "sim"
# Owns the one ACL group the sim user is not in, so the lab has hosts the sim can reach
# only through its other groups: requests must really be matched on acls.
OUTSIDER_USER = "lab-admin"
RESTRICTED_ACL = "acl-restricted"
RESTRICTED_EVERY = 5
POOL_NAMES = ("bvt", "cq", "suites", "cts", "quota", "continuous", "faft", "performance")
VERSION_LABELS = ("cros-version:R120-15662.0.0", "cros-version:R121-15699.0.0")
VERSIONED_FRACTION = 1 / 3
PRIORITIES = (10, 20, 30, 40, 50)
PINNED_JOBS = 5
MAX_SUITE_CHILDREN = 500
INSERT_CHUNK = 10_000
SUITE_MIN_DUTS_KEY = "suite_min_duts"

q = afe_host_queue_entries


class SimulationError(RuntimeError):
    """The lab or the rdb's answers are not what a scheduler can work with."""


class SchedulerClient(Protocol):
    """The part of RDBClient a scheduler tick uses; lets tests stand in a fake."""

    def release_hosts(self, grace_s: float | None = None) -> list[int]: ...

    def acquire_hosts(self, requests: Iterable[AcquireHostRequest]) -> Sequence[Any]: ...

    def update_hosts(self, requests: Iterable[UpdateHostRequest]) -> Sequence[RDBException | None]: ...


@dataclass
class LabInfo:
    """What the sim needs to know to write jobs for a lab, by name and by id."""

    labels: dict[str, int]
    boards: list[str]
    pools: list[str]
    platforms: list[str]
    versions: list[str]
    acl_groups: dict[str, int]
    sim_acls: list[int]
    host_ids: list[int]
    host_board: dict[int, str] = field(repr=False)
    host_pool: dict[int, str] = field(repr=False)
    users: list[str] = field(default_factory=lambda: [SIM_USER])
    sim_user: str = SIM_USER

    def label_id(self, name: str) -> int:
        try:
            return self.labels[name]
        except KeyError:
            raise SimulationError(f"the lab has no label {name!r}") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def _hostname(index: int) -> str:
    # Decimal digits of the index, so every name is unique whatever the lab size.
    lab, rest = divmod(index, 1000)
    return f"chromeos{lab + 1}-row{rest // 100 + 1}-rack{rest // 10 % 10 + 1}-host{rest % 10 + 1}"


def _board_names(count: int) -> list[str]:
    return [f"board{i:02d}" for i in range(count)]


def _pool_names(count: int) -> list[str]:
    return [POOL_NAMES[i] if i < len(POOL_NAMES) else f"pool{i:02d}" for i in range(count)]


def _insert_chunks(
    conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]], bar: tqdm | None
) -> None:
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        conn.execute(table.insert(), list(chunk))
        if bar is not None:
            bar.update(len(chunk))


def seed_lab(
    engine: Engine,
    *,
    hosts: int = 2000,
    boards: int = 20,
    pools: int = 4,
    acl_groups: int = 3,
    seed: int = 0,
    progress: bool = False,
) -> LabInfo:
    """Fill an empty AFE with a lab: hosts spread evenly over boards and pools.

    Hosts start leased (the schema's default), as new hosts do: the first release
    makes them available. With acl_groups >= 2 the last group is one the sim user is
    not in (every RESTRICTED_EVERY-th host is in it as well as in a shared group);
    the other groups, which the sim user is in, split all hosts between them.
    """
    if hosts < 1 or boards < 1 or pools < 1 or acl_groups < 1:
        raise ValueError("hosts, boards, pools and acl_groups must all be >= 1")
    rng = random.Random(seed)
    with engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(afe_hosts)).scalar():
            raise SimulationError("the database already has hosts; seed an empty one, or reuse it (--no-seed)")

    board_names = _board_names(boards)
    pool_names = _pool_names(pools)
    shared_acls = [f"acl-{i}" for i in range(acl_groups - 1 if acl_groups >= 2 else 1)]
    restricted = [RESTRICTED_ACL] if acl_groups >= 2 else []

    label_rows = (
        [{"name": f"board:{b}", "platform": 0} for b in board_names]
        + [{"name": b, "platform": 1} for b in board_names]
        + [{"name": f"pool:{p}", "platform": 0} for p in pool_names]
        + [{"name": v, "platform": 0} for v in VERSION_LABELS]
    )
    for row in label_rows:
        row.update(invalid=0, only_if_needed=0, kernel_config="")

    host_rows: list[dict[str, Any]] = []
    host_plan: list[tuple[str, str, str | None, list[str]]] = []
    for i in range(hosts):
        board = board_names[i % boards]
        pool = pool_names[(i // boards) % pools]
        version = rng.choice(VERSION_LABELS) if rng.random() < VERSIONED_FRACTION else None
        acls = [shared_acls[i % len(shared_acls)]]
        if restricted and i % RESTRICTED_EVERY == 0:
            acls.append(RESTRICTED_ACL)
        host_rows.append(
            {"hostname": _hostname(i), "status": "Ready", "leased": 1, "locked": 0, "invalid": 0,
             "protection": 0, "dirty": 0}
        )
        host_plan.append((board, pool, version, acls))

    total = len(host_rows) + sum(3 + (v is not None) + len(a) for _, _, v, a in host_plan)
    bar = tqdm(total=total, desc="seeding lab", unit="row", disable=not progress, leave=False)
    try:
        with engine.begin() as conn:
            conn.execute(
                afe_users.insert(),
                [{"login": login, "access_level": 0, "reboot_before": 0, "reboot_after": 0,
                  "show_experimental": 0} for login in (SIM_USER, OUTSIDER_USER)],
            )
            users = dict(conn.execute(select(afe_users.c.login, afe_users.c.id)).all())
            conn.execute(
                afe_acl_groups.insert(),
                [{"name": name, "description": "rdb-sim"} for name in shared_acls + restricted],
            )
            acl_ids = dict(conn.execute(select(afe_acl_groups.c.name, afe_acl_groups.c.id)).all())
            conn.execute(
                afe_acl_groups_users.insert(),
                [{"aclgroup_id": acl_ids[name], "user_id": users[SIM_USER]} for name in shared_acls]
                + [{"aclgroup_id": acl_ids[name], "user_id": users[OUTSIDER_USER]} for name in restricted],
            )
            conn.execute(afe_labels.insert(), label_rows)
            labels = dict(conn.execute(select(afe_labels.c.name, afe_labels.c.id)).all())

            _insert_chunks(conn, afe_hosts, host_rows, bar)
            ids_by_name = dict(conn.execute(select(afe_hosts.c.hostname, afe_hosts.c.id)).all())
            host_ids = [ids_by_name[row["hostname"]] for row in host_rows]

            host_label_rows: list[dict[str, int]] = []
            host_acl_rows: list[dict[str, int]] = []
            for host_id, (board, pool, version, acls) in zip(host_ids, host_plan):
                names = [f"board:{board}", board, f"pool:{pool}"] + ([version] if version else [])
                host_label_rows.extend({"host_id": host_id, "label_id": labels[n]} for n in names)
                host_acl_rows.extend({"host_id": host_id, "aclgroup_id": acl_ids[a]} for a in acls)
            _insert_chunks(conn, afe_hosts_labels, host_label_rows, bar)
            _insert_chunks(conn, afe_acl_groups_hosts, host_acl_rows, bar)
    finally:
        bar.close()

    return LabInfo(
        labels=labels,
        boards=[f"board:{b}" for b in board_names],
        pools=[f"pool:{p}" for p in pool_names],
        platforms=list(board_names),
        versions=list(VERSION_LABELS),
        acl_groups=acl_ids,
        sim_acls=sorted(acl_ids[name] for name in shared_acls),
        host_ids=host_ids,
        host_board={h: f"board:{plan[0]}" for h, plan in zip(host_ids, host_plan)},
        host_pool={h: f"pool:{plan[1]}" for h, plan in zip(host_ids, host_plan)},
        users=[SIM_USER, OUTSIDER_USER],
    )


def load_lab(engine: Engine, *, sim_user: str = SIM_USER) -> LabInfo:
    """Describe a lab that is already in the database (rdb-sim --no-seed)."""
    with engine.connect() as conn:
        label_rows = conn.execute(select(afe_labels.c.name, afe_labels.c.id, afe_labels.c.platform)).all()
        acl_ids = dict(conn.execute(select(afe_acl_groups.c.name, afe_acl_groups.c.id)).all())
        sim_acls = sorted(
            conn.execute(
                select(afe_acl_groups_users.c.aclgroup_id)
                .join(afe_users, afe_users.c.id == afe_acl_groups_users.c.user_id)
                .where(afe_users.c.login == sim_user)
            ).scalars()
        )
        users = sorted(login for login in conn.execute(select(afe_users.c.login)).scalars() if login)
        host_ids = sorted(conn.execute(select(afe_hosts.c.id).where(afe_hosts.c.invalid == 0)).scalars())
        host_labels = conn.execute(
            select(afe_hosts_labels.c.host_id, afe_labels.c.name)
            .join(afe_labels, afe_labels.c.id == afe_hosts_labels.c.label_id)
            .where(or_(afe_labels.c.name.startswith("board:"), afe_labels.c.name.startswith("pool:")))
            .order_by(afe_hosts_labels.c.host_id, afe_labels.c.name)
        ).all()
    if not host_ids:
        raise SimulationError("the database has no hosts; seed it first (drop --no-seed)")
    if sim_user not in users:
        raise SimulationError(f"the database has no user {sim_user!r}; it was not seeded by rdb-sim")
    host_board: dict[int, str] = {}
    host_pool: dict[int, str] = {}
    for host_id, name in host_labels:
        (host_board if name.startswith("board:") else host_pool).setdefault(host_id, name)
    names = sorted(name for name, _, _ in label_rows)
    return LabInfo(
        labels={name: label_id for name, label_id, _ in label_rows},
        boards=[n for n in names if n.startswith("board:")],
        pools=[n for n in names if n.startswith("pool:")],
        platforms=sorted(name for name, _, platform in label_rows if platform),
        versions=[n for n in names if n.startswith(PROVISIONABLE_PREFIXES)],
        acl_groups=acl_ids,
        sim_acls=sim_acls,
        host_ids=host_ids,
        host_board=host_board,
        host_pool=host_pool,
        users=users,
        sim_user=sim_user,
    )


def _job_row(*, name: str, owner: str, priority: int, parent_job_id: int | None) -> dict[str, Any]:
    return {
        "owner": owner, "name": name, "priority": priority, "control_file": "", "control_type": 2,
        "created_on": _now(), "synch_count": 1, "timeout": 24, "run_verify": 0, "email_list": "",
        "reboot_before": 0, "reboot_after": 0, "parse_failed_repair": 1, "max_runtime_hrs": 72,
        "parent_job_id": parent_job_id,
    }


def _hqe_row(job_id: int, *, host_id: int | None = None, meta_host: int | None = None) -> dict[str, Any]:
    return {
        "job_id": job_id, "host_id": host_id, "meta_host": meta_host, "status": "Queued",
        "active": 0, "complete": 0, "deleted": 0, "aborted": 0, "execution_subdir": "",
    }


def _label_ids(lab: LabInfo, labels: Iterable[str | int]) -> list[int]:
    return sorted({label if isinstance(label, int) else lab.label_id(label) for label in labels})


def create_job(
    engine: Engine,
    lab: LabInfo,
    *,
    deps: Iterable[str | int],
    priority: int,
    owner: str,
    host_id: int | None = None,
    parent_job_id: int | None = None,
    meta_host: str | int | None = None,
    name: str = "sim-job",
) -> int:
    """Write a one-HQE job; returns the HQE's id. deps are label names or ids.

    A job with no deps, host or meta_host is refused: the sim takes such an HQE for a
    hostless (suite) job and would never ask the rdb for a host for it.
    """
    dep_ids = _label_ids(lab, deps)
    meta_id = None if meta_host is None else _label_ids(lab, [meta_host])[0]
    if not dep_ids and host_id is None and meta_id is None:
        raise ValueError("a job needs deps, a host_id or a meta_host; without them it is hostless")
    with engine.begin() as conn:
        job_id = conn.execute(
            afe_jobs.insert().values(**_job_row(name=name, owner=owner, priority=priority, parent_job_id=parent_job_id))
        ).inserted_primary_key[0]
        if dep_ids:
            conn.execute(afe_jobs_dependency_labels.insert(), [{"job_id": job_id, "label_id": d} for d in dep_ids])
        hqe = conn.execute(q.insert().values(**_hqe_row(job_id, host_id=host_id, meta_host=meta_id)))
        return int(hqe.inserted_primary_key[0])


def create_suite(
    engine: Engine,
    lab: LabInfo,
    *,
    board: str,
    pool: str,
    children: int,
    suite_min_duts: int,
    priority: int,
    owner: str,
) -> int:
    """Write a hostless suite job and its children; returns the suite's job id.

    Each child asks for any host of the board and pool (deps, no meta_host), as a
    dynamic suite's tests do.
    """
    board = board if board.startswith("board:") else f"board:{board}"
    pool = pool if pool.startswith("pool:") else f"pool:{pool}"
    deps = _label_ids(lab, [board, pool])
    short = f"{board.removeprefix('board:')}-{pool.removeprefix('pool:')}"
    with engine.begin() as conn:
        suite_row = _job_row(name=f"suite-{short}", owner=owner, priority=priority, parent_job_id=None)
        suite_id = int(conn.execute(afe_jobs.insert().values(**suite_row)).inserted_primary_key[0])
        conn.execute(q.insert().values(**_hqe_row(suite_id)))
        conn.execute(
            afe_job_keyvals.insert().values(job_id=suite_id, key=SUITE_MIN_DUTS_KEY, value=str(suite_min_duts))
        )
        if children > 0:
            conn.execute(
                afe_jobs.insert(),
                [_job_row(name=f"{short}-test{i}", owner=owner, priority=priority, parent_job_id=suite_id)
                 for i in range(children)],
            )
            child_ids = list(
                conn.execute(select(afe_jobs.c.id).where(afe_jobs.c.parent_job_id == suite_id)).scalars()
            )
            conn.execute(
                afe_jobs_dependency_labels.insert(),
                [{"job_id": c, "label_id": d} for c in child_ids for d in deps],
            )
            conn.execute(q.insert(), [_hqe_row(c) for c in child_ids])
    return suite_id


# --- the scheduler ------------------------------------------------------------------

_has_deps = exists().where(afe_jobs_dependency_labels.c.job_id == q.c.job_id)
# Hostless: nothing to ask the rdb for (no host, no meta_host, no deps): a suite.
_HOSTLESS = and_(q.c.host_id.is_(None), q.c.meta_host.is_(None), ~_has_deps)
_QUEUED = and_(q.c.status == "Queued", q.c.active == 0, q.c.complete == 0, q.c.deleted == 0, q.c.aborted == 0)


@dataclass(frozen=True, slots=True)
class TickStats:
    tick: int
    requests: int
    leased: int
    released: int
    completed: int
    latency_s: float

    @property
    def unsatisfied(self) -> int:
        return self.requests - self.leased


@dataclass(frozen=True, slots=True)
class _Running:
    host_id: int
    started_tick: int


class Simulator:
    """Runs scheduler ticks against a lab; keeps one tick's work to three rdb batches.

    job_ticks: how many ticks a job runs before it completes. Every arrival_every
    ticks, arrival_suites new suites (and a few standalone jobs) arrive, sized to a bit
    more than one board/pool's hosts, so the lab stays busy and some requests wait.
    """

    def __init__(
        self,
        db_url: str,
        client: SchedulerClient,
        lab: LabInfo,
        *,
        job_ticks: int = 3,
        arrival_every: int = 3,
        arrival_suites: int = 2,
        release_grace_s: float | None = 0.0,
        seed: int = 0,
        prejob_action_labels: Iterable[str] = (),
        max_requests: int = DEFAULT_MAX_REQUESTS,
    ) -> None:
        if job_ticks < 1 or arrival_every < 1 or max_requests < 1:
            raise ValueError("job_ticks, arrival_every and max_requests must be >= 1")
        # A worker refuses a whole batch above its limit; asking for the most urgent
        # max_requests HQEs and leaving the rest queued keeps the tick to one batch.
        self.max_requests = max_requests
        self.client = client
        self.lab = lab
        self.job_ticks = job_ticks
        self.arrival_every = arrival_every
        self.arrival_suites = arrival_suites
        self.release_grace_s = release_grace_s
        self.engine = create_engine(db_url, pool_pre_ping=True)
        self.jobs = JobQueryManager(db_url, prejob_action_labels=prejob_action_labels)
        self.history: list[TickStats] = []
        self.ticks = 0
        self._rng = random.Random(seed)
        self._running: dict[int, _Running] = {}
        self._adopt_running()

    def close(self) -> None:
        self.jobs.close()
        self.engine.dispose()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> dict[int, int]:
        """HQE id -> host id of the jobs the sim is running."""
        return {hqe: r.host_id for hqe, r in self._running.items()}

    def _adopt_running(self) -> None:
        # A previous run's jobs (--no-seed) still hold their hosts; finish them too,
        # or those hosts would never come back.
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(q.c.id, q.c.host_id).where(q.c.active == 1, q.c.complete == 0, q.c.host_id.is_not(None))
            ).all()
        for hqe_id, host_id in rows:
            self._running[hqe_id] = _Running(host_id, 0)

    # --- work arriving ----------------------------------------------------------------

    def _hosts_per_board_pool(self) -> int:
        return max(1, len(self.lab.host_ids) // max(1, len(self.lab.boards) * len(self.lab.pools)))

    def add_suites(self, count: int) -> list[int]:
        per = self._hosts_per_board_pool()
        suites = []
        for _ in range(count):
            most = max(1, min(MAX_SUITE_CHILDREN, per * 2))
            children = self._rng.randint(max(1, min(per // 2, most // 4)), most)
            suites.append(
                create_suite(
                    self.engine, self.lab,
                    board=self._rng.choice(self.lab.boards),
                    pool=self._rng.choice(self.lab.pools),
                    children=children,
                    suite_min_duts=self._rng.randint(1, min(4, children)),
                    priority=self._rng.choice(PRIORITIES),
                    owner=self.lab.sim_user,
                )
            )
        return suites

    def add_jobs(self, count: int) -> list[int]:
        """Standalone jobs: a board dep, a pool meta_host, sometimes a build to prefer."""
        hqes = []
        for _ in range(count):
            deps: list[str] = [self._rng.choice(self.lab.boards)]
            if self.lab.versions and self._rng.random() < 0.5:
                deps.append(self._rng.choice(self.lab.versions))
            hqes.append(
                create_job(
                    self.engine, self.lab, deps=deps, priority=self._rng.choice(PRIORITIES),
                    owner=self.lab.sim_user, meta_host=self._rng.choice(self.lab.pools),
                )
            )
        return hqes

    def add_pinned_jobs(self, count: int = PINNED_JOBS) -> list[int]:
        """Jobs that must run on one named host (the rdb validates, not chooses, it)."""
        hosts = self._rng.sample(self.lab.host_ids, min(count, len(self.lab.host_ids)))
        return [
            create_job(
                self.engine, self.lab, deps=[self.lab.host_board[h]] if h in self.lab.host_board else [],
                priority=self._rng.choice(PRIORITIES), owner=self.lab.sim_user, host_id=h, name="sim-pinned",
            )
            for h in hosts
        ]

    # --- one tick -----------------------------------------------------------------------

    def tick(self) -> TickStats:
        started = time.perf_counter()
        self.ticks += 1
        if self.ticks % self.arrival_every == 0:
            self.add_suites(self.arrival_suites)
            self.add_jobs(self.arrival_suites * 2)

        released = self.client.release_hosts(grace_s=self.release_grace_s)
        self._start_suites()
        pending = self.pending_hqes()
        requests = self.jobs.acquire_requests(pending)
        hosts = list(self.client.acquire_hosts(requests)) if requests else []
        if len(hosts) != len(requests):
            raise SimulationError(f"{len(requests)} acquire request(s) but {len(hosts)} answer(s)")
        leased = self._start_jobs(pending, requests, hosts)
        completed = self._finish_due_jobs()
        self._finish_suites()

        stats = TickStats(
            tick=self.ticks,
            requests=len(requests),
            leased=leased,
            released=len(released),
            completed=completed,
            latency_s=time.perf_counter() - started,
        )
        self.history.append(stats)
        return stats

    def run(self, ticks: int, *, progress: bool = False) -> list[TickStats]:
        bar = tqdm(range(ticks), desc="rdb-sim", unit="tick", disable=not progress)
        for _ in bar:
            stats = self.tick()
            bar.set_postfix(leased=stats.leased, unsatisfied=stats.unsatisfied, refresh=False)
        return self.history

    def pending_hqes(self) -> list[int]:
        """Queued HQEs that need a host, most urgent first (as monitor_db orders them)."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(q.c.id)
                    .join(afe_jobs, afe_jobs.c.id == q.c.job_id)
                    .where(_QUEUED, ~_HOSTLESS)
                    .order_by(afe_jobs.c.priority.desc(), q.c.job_id, q.c.id)
                    .limit(self.max_requests)
                ).scalars()
            )

    def _start_suites(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(q).where(_QUEUED, _HOSTLESS).values(status="Running", active=1, started_on=_now()))

    def _start_jobs(
        self, pending: Sequence[int], requests: Sequence[AcquireHostRequest], hosts: Sequence[Any]
    ) -> int:
        got: list[tuple[int, int]] = []
        holders = {r.host_id: hqe for hqe, r in self._running.items()}
        for hqe_id, request, host in zip(pending, requests, hosts):
            if host is None:
                continue
            if request.host_id is not None and host.id != request.host_id:
                raise SimulationError(
                    f"HQE {hqe_id} is pinned to host {request.host_id} but the rdb gave host {host.id}"
                )
            if host.id in holders:
                raise SimulationError(f"the rdb gave host {host.id} to HQE {hqe_id}, but HQE {holders[host.id]} has it")
            holders[host.id] = hqe_id
            got.append((hqe_id, host.id))
        if not got:
            return 0
        # Active before anything else: from here on no release can take the host back.
        with self.engine.begin() as conn:
            conn.execute(
                update(q)
                .where(q.c.id == bindparam("hqe"))
                .values(host_id=bindparam("host"), active=1, status="Running", started_on=_now()),
                [{"hqe": hqe_id, "host": host_id} for hqe_id, host_id in got],
            )
        self._set_host_status([host_id for _, host_id in got], "Running")
        for hqe_id, host_id in got:
            self._running[hqe_id] = _Running(host_id, self.ticks)
        return len(got)

    def _finish_due_jobs(self) -> int:
        due = {hqe: r.host_id for hqe, r in self._running.items() if self.ticks - r.started_tick >= self.job_ticks}
        if not due:
            return 0
        with self.engine.begin() as conn:
            conn.execute(
                update(q).where(q.c.id.in_(sorted(due))).values(active=0, complete=1, status="Completed")
            )
        self._set_host_status(sorted(set(due.values())), "Ready")
        for hqe in due:
            del self._running[hqe]
        return len(due)

    def _finish_suites(self) -> None:
        children = afe_jobs.alias("children")
        child_hqe = q.alias("child_hqe")
        unfinished_child = (
            exists()
            .select_from(children.join(child_hqe, child_hqe.c.job_id == children.c.id))
            .where(children.c.parent_job_id == q.c.job_id, child_hqe.c.complete == 0)
        )
        with self.engine.begin() as conn:
            # MySQL cannot UPDATE a table it reads in a subquery: select, then update.
            done = list(
                conn.execute(
                    select(q.c.id).where(_HOSTLESS, q.c.active == 1, q.c.complete == 0, ~unfinished_child)
                ).scalars()
            )
            if done:
                conn.execute(update(q).where(q.c.id.in_(done)).values(active=0, complete=1, status="Completed"))

    def _set_host_status(self, host_ids: Sequence[int], status: str) -> None:
        errors = self.client.update_hosts([UpdateHostRequest(h, {"status": status}) for h in host_ids])
        failed = [(h, e) for h, e in zip(host_ids, errors) if e is not None]
        if failed:
            host_id, error = failed[0]
            raise SimulationError(
                f"the rdb refused to set {len(failed)} host(s) {status}; host {host_id}: "
                f"{type(error).__name__}: {error}"
            )


# --- reporting ----------------------------------------------------------------------

def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def format_summary(history: Sequence[TickStats]) -> str:
    latencies_ms = [s.latency_s * 1000 for s in history]
    rows = [
        ("ticks", f"{len(history)}"),
        ("requests", f"{sum(s.requests for s in history)}"),
        ("hosts leased", f"{sum(s.leased for s in history)}"),
        ("unsatisfied", f"{sum(s.unsatisfied for s in history)}"),
        ("hosts released", f"{sum(s.released for s in history)}"),
        ("HQEs completed", f"{sum(s.completed for s in history)}"),
        ("tick latency p50 (ms)", f"{percentile(latencies_ms, 50):.1f}"),
        ("tick latency p99 (ms)", f"{percentile(latencies_ms, 99):.1f}"),
    ]
    return format_table(("metric", "value"), rows)


# --- CLI ----------------------------------------------------------------------------

GRACE_HELP = (
    "lease age, in seconds, below which release_hosts keeps an idle host leased "
    "(default %(default)s). The grace protects a host another scheduler has just "
    "leased but not yet marked active. The sim marks its HQEs active in the same tick "
    "it leases their hosts, so it needs no grace; and with the worker's default (60 s) "
    "the hosts of jobs the sim finished, which it leased seconds before, would not come "
    "back within a short run. Raise it when other schedulers share the lab."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdb-sim",
        description="Reference scheduler: seeds a lab, then runs scheduler ticks against an rdb worker "
        "and prints a summary.",
    )
    parser.add_argument("--amqp-url", default=os.environ.get("RDB_AMQP_URL"),
                        help="broker URL (default: $RDB_AMQP_URL)")
    parser.add_argument("--db-url", default=os.environ.get("RDB_DB_URL"),
                        help="SQLAlchemy URL of the AFE database, migrated to head (default: $RDB_DB_URL)")
    parser.add_argument("--queue", default=DEFAULT_QUEUE, help="the workers' request queue (default %(default)s)")
    parser.add_argument("--ticks", type=int, default=30, help="scheduler ticks to run (default %(default)s)")
    parser.add_argument("--hosts", type=int, default=2000, help="hosts to seed (default %(default)s)")
    parser.add_argument("--boards", type=int, default=20, help="boards to seed (default %(default)s)")
    parser.add_argument("--pools", type=int, default=4, help="pools to seed (default %(default)s)")
    parser.add_argument("--suites", type=int, default=10,
                        help="suites queued before the first tick (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--no-seed", action="store_true",
                        help="reuse the lab already in the database instead of seeding an empty one")
    parser.add_argument("--release-grace-s", type=float, default=0.0, help=GRACE_HELP)
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="seconds to wait for each rdb reply (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    missing = [flag for flag, value in (("--amqp-url", args.amqp_url), ("--db-url", args.db_url)) if not value]
    if missing:
        parser.print_usage(sys.stderr)
        print(f"rdb-sim: error: {' and '.join(missing)} required (or set RDB_AMQP_URL / RDB_DB_URL)", file=sys.stderr)
        return 2
    counts_ok = min(args.hosts, args.boards, args.pools) >= 1 and min(args.ticks, args.suites) >= 0
    if not counts_ok or args.release_grace_s < 0 or args.timeout_s <= 0:
        parser.print_usage(sys.stderr)
        print("rdb-sim: error: --hosts/--boards/--pools must be >= 1, --ticks/--suites/--release-grace-s >= 0 "
              "and --timeout-s > 0", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    engine = create_engine(args.db_url, pool_pre_ping=True)
    try:
        if args.no_seed:
            lab = load_lab(engine)
        else:
            lab = seed_lab(engine, hosts=args.hosts, boards=args.boards, pools=args.pools,
                           seed=args.seed, progress=True)
        with RDBClient(args.amqp_url, timeout_s=args.timeout_s, queue=args.queue) as client, Simulator(
            args.db_url, client, lab, release_grace_s=args.release_grace_s, seed=args.seed
        ) as sim:
            sim.add_pinned_jobs()
            sim.add_suites(args.suites)
            history = sim.run(args.ticks, progress=True)
    except RDBException as exc:
        print(f"rdb-sim: rdb error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except SimulationError as exc:
        print(f"rdb-sim: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"rdb-sim: database error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(format_summary(history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
