"""rdb-sim: the lab it seeds, the jobs it writes, and its ticks against a real worker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select

from rdb_client.sim import (
    RESTRICTED_ACL,
    SIM_USER,
    LabInfo,
    SimulationError,
    Simulator,
    create_job,
    create_suite,
    format_summary,
    load_lab,
    main,
    percentile,
    seed_lab,
)
from schema.tables import (
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

q = afe_host_queue_entries


def host_label_names(engine: Engine) -> dict[int, list[tuple[str, bool]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(afe_hosts_labels.c.host_id, afe_labels.c.name, afe_labels.c.platform).join(
                afe_labels, afe_labels.c.id == afe_hosts_labels.c.label_id
            )
        ).all()
    labels: dict[int, list[tuple[str, bool]]] = {}
    for host_id, name, platform in rows:
        labels.setdefault(host_id, []).append((name, bool(platform)))
    return labels


# --- seeding ------------------------------------------------------------------------


def test_seed_lab_creates_leased_ready_hosts_each_with_one_board_pool_and_platform(engine: Engine) -> None:
    lab = seed_lab(engine, hosts=240, boards=6, pools=4, acl_groups=3, seed=1)

    with engine.connect() as conn:
        hosts = conn.execute(select(afe_hosts.c.id, afe_hosts.c.hostname, afe_hosts.c.status, afe_hosts.c.leased,
                                    afe_hosts.c.locked, afe_hosts.c.protection, afe_hosts.c.dirty)).all()
    assert len(hosts) == 240 and sorted(lab.host_ids) == sorted(h.id for h in hosts)
    assert len({h.hostname for h in hosts}) == 240
    assert {(h.status, h.leased, h.locked, h.protection, h.dirty) for h in hosts} == {("Ready", 1, 0, 0, 0)}

    labels = host_label_names(engine)
    for host_id in lab.host_ids:
        names = labels[host_id]
        boards = [n for n, _ in names if n.startswith("board:")]
        pools = [n for n, _ in names if n.startswith("pool:")]
        platforms = [n for n, platform in names if platform]
        assert len(boards) == 1 and len(pools) == 1 and len(platforms) == 1, names
        assert boards == [f"board:{platforms[0]}"]
        assert lab.host_board[host_id] == boards[0] and lab.host_pool[host_id] == pools[0]
    assert len(lab.boards) == 6 and len(lab.pools) == 4 and len(lab.platforms) == 6
    # Spread evenly: every board/pool pair has the same number of hosts.
    assert set(Counter(zip(lab.host_board.values(), lab.host_pool.values())).values()) == {240 // 24}
    versioned = [h for h in lab.host_ids if any(n.startswith("cros-version:") for n, _ in labels[h])]
    assert 0 < len(versioned) < 240


def test_seed_lab_puts_every_host_in_a_group_of_the_sim_user_and_some_in_one_it_is_not_in(
    engine: Engine,
) -> None:
    lab = seed_lab(engine, hosts=100, boards=2, pools=2, acl_groups=3)

    with engine.connect() as conn:
        sim_groups = set(
            conn.execute(
                select(afe_acl_groups_users.c.aclgroup_id)
                .join(afe_users, afe_users.c.id == afe_acl_groups_users.c.user_id)
                .where(afe_users.c.login == SIM_USER)
            ).scalars()
        )
        memberships = conn.execute(select(afe_acl_groups_hosts.c.host_id, afe_acl_groups_hosts.c.aclgroup_id)).all()
    assert len(lab.acl_groups) == 3
    assert sim_groups == set(lab.sim_acls) and len(sim_groups) == 2
    assert lab.acl_groups[RESTRICTED_ACL] not in sim_groups
    assert {h for h, g in memberships if g in sim_groups} == set(lab.host_ids)
    assert 0 < len({h for h, g in memberships if g == lab.acl_groups[RESTRICTED_ACL]}) < 100


def test_seed_lab_refuses_a_database_that_already_has_hosts(engine: Engine) -> None:
    seed_lab(engine, hosts=10, boards=2, pools=1)

    with pytest.raises(SimulationError, match="already has hosts"):
        seed_lab(engine, hosts=10, boards=2, pools=1)


def test_load_lab_describes_a_seeded_lab_as_seeding_did(engine: Engine) -> None:
    seeded = seed_lab(engine, hosts=50, boards=5, pools=2)

    loaded = load_lab(engine)

    assert loaded.labels == seeded.labels
    assert sorted(loaded.boards) == sorted(seeded.boards)
    assert sorted(loaded.pools) == sorted(seeded.pools)
    assert sorted(loaded.platforms) == sorted(seeded.platforms)
    assert sorted(loaded.versions) == sorted(seeded.versions)
    assert loaded.sim_acls == seeded.sim_acls
    assert loaded.host_ids == sorted(seeded.host_ids)
    assert loaded.host_board == seeded.host_board and loaded.host_pool == seeded.host_pool


# --- writing jobs -------------------------------------------------------------------


def test_create_suite_writes_a_hostless_parent_and_board_pool_children(engine: Engine) -> None:
    lab = seed_lab(engine, hosts=20, boards=2, pools=2)
    board, pool = lab.boards[1], lab.pools[0]

    suite = create_suite(engine, lab, board=board, pool=pool, children=4, suite_min_duts=2, priority=30, owner="sim")

    with engine.connect() as conn:
        suite_hqes = conn.execute(select(q).where(q.c.job_id == suite)).all()
        children = list(conn.execute(select(afe_jobs.c.id).where(afe_jobs.c.parent_job_id == suite)).scalars())
        keyvals = conn.execute(select(afe_job_keyvals.c.key, afe_job_keyvals.c.value).where(
            afe_job_keyvals.c.job_id == suite)).all()
        deps = conn.execute(select(afe_jobs_dependency_labels.c.job_id, afe_jobs_dependency_labels.c.label_id)).all()
        child_hqes = conn.execute(select(q).where(q.c.job_id.in_(children))).all()
    assert len(suite_hqes) == 1 and suite_hqes[0].host_id is None and suite_hqes[0].meta_host is None
    assert keyvals == [("suite_min_duts", "2")]
    assert len(children) == 4
    assert {j for j, _ in deps} == set(children)
    assert all({l for j, l in deps if j == c} == {lab.labels[board], lab.labels[pool]} for c in children)
    assert len(child_hqes) == 4
    assert {(h.status, h.active, h.complete, h.deleted, h.host_id, h.meta_host) for h in child_hqes} == {
        ("Queued", 0, 0, 0, None, None)
    }


def test_create_job_refuses_a_job_that_would_be_hostless(engine: Engine) -> None:
    lab = seed_lab(engine, hosts=4, boards=1, pools=1)

    with pytest.raises(ValueError, match="hostless"):
        create_job(engine, lab, deps=[], priority=0, owner="sim")


def test_summary_is_an_aligned_table_of_totals_and_latency_percentiles() -> None:
    from rdb_client.sim import TickStats

    history = [
        TickStats(tick=i, requests=10, leased=4, released=1, completed=2, latency_s=i / 1000) for i in range(1, 101)
    ]

    table = format_summary(history).splitlines()

    values = dict(line.rsplit(None, 1) for line in table[2:])
    assert values["ticks"] == "100" and values["requests"] == "1000" and values["hosts leased"] == "400"
    assert values["unsatisfied"] == "600" and values["HQEs completed"] == "200"
    assert values["tick latency p50 (ms)"] == "50.0" and values["tick latency p99 (ms)"] == "99.0"
    assert len({len(line) for line in table}) == 1
    assert percentile([], 50) == 0.0


def test_main_without_urls_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RDB_AMQP_URL", raising=False)
    monkeypatch.delenv("RDB_DB_URL", raising=False)

    assert main(["--ticks", "1"]) == 2
    assert "--amqp-url and --db-url" in capsys.readouterr().err


# --- against a real worker ------------------------------------------------------------


def active_hqes(engine: Engine) -> list[tuple[int, int, int]]:
    """(hqe id, job id, host id) of the HQEs running on a host."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(q.c.id, q.c.job_id, q.c.host_id).where(
                    q.c.active == 1, q.c.complete == 0, q.c.host_id.is_not(None)
                )
            )
        ]


def check_assignments(engine: Engine, lab: LabInfo) -> None:
    """No host runs two HQEs; each runs on a leased, Running host with the job's deps and a sim acl."""
    running = active_hqes(engine)
    hosts = [h for _, _, h in running]
    assert len(hosts) == len(set(hosts)), Counter(hosts).most_common(3)
    if not running:
        return
    with engine.connect() as conn:
        state = {r.id: r for r in conn.execute(select(afe_hosts).where(afe_hosts.c.id.in_(hosts)))}
        host_labels: dict[int, set[int]] = {}
        for h, label in conn.execute(select(afe_hosts_labels.c.host_id, afe_hosts_labels.c.label_id)
                                     .where(afe_hosts_labels.c.host_id.in_(hosts))):
            host_labels.setdefault(h, set()).add(label)
        host_acls: dict[int, set[int]] = {}
        for h, acl in conn.execute(select(afe_acl_groups_hosts.c.host_id, afe_acl_groups_hosts.c.aclgroup_id)
                                   .where(afe_acl_groups_hosts.c.host_id.in_(hosts))):
            host_acls.setdefault(h, set()).add(acl)
        job_deps: dict[int, set[int]] = {}
        d = afe_jobs_dependency_labels
        for j, label in conn.execute(select(d.c.job_id, d.c.label_id)):
            job_deps.setdefault(j, set()).add(label)
    provisionable = {lab.labels[v] for v in lab.versions}
    for _, job_id, host_id in running:
        assert state[host_id].leased == 1 and state[host_id].status == "Running"
        assert job_deps.get(job_id, set()) - provisionable <= host_labels[host_id]
        assert host_acls[host_id] & set(lab.sim_acls)


def test_simulator_ticks_lease_run_finish_and_reuse_hosts_against_a_worker(
    db_url: str, engine: Engine, amqp_url: str, queue_name: str, start_worker: Callable[..., object]
) -> None:
    from rdb_client import RDBClient

    lab = seed_lab(engine, hosts=48, boards=3, pools=2, seed=3)
    start_worker()
    with RDBClient(amqp_url, timeout_s=20, queue=queue_name) as client, Simulator(
        db_url, client, lab, job_ticks=2, arrival_every=2, arrival_suites=2, seed=3
    ) as sim:
        pinned = sim.add_pinned_jobs(3)
        sim.add_suites(4)
        with engine.connect() as conn:
            pinned_hosts = dict(conn.execute(select(q.c.id, q.c.host_id).where(q.c.id.in_(pinned))).all())

        first = sim.tick()
        check_assignments(engine, lab)
        # A new lab's hosts are all leased; the first release frees them.
        assert first.released == 48
        assert first.leased > 0 and first.requests > 0
        with engine.connect() as conn:
            got = dict(conn.execute(select(q.c.id, q.c.host_id).where(q.c.id.in_(pinned), q.c.active == 1)).all())
        assert got and all(got[h] == pinned_hosts[h] for h in got)

        for _ in range(7):
            sim.tick()
            check_assignments(engine, lab)
            # The rdb's own view of a running host agrees with the HQE table.
            running = active_hqes(engine)
            if running:
                (host,) = client.get_hosts([running[0][2]])
                assert host is not None and host.status == "Running" and host.leased

    history = sim.history
    assert len(history) == 8
    assert sum(s.completed for s in history) > 0
    # Hosts of finished jobs came back: released after the first tick, and leased again.
    assert sum(s.released for s in history[1:]) > 0
    assert sum(s.leased for s in history) > 48
    assert sum(s.unsatisfied for s in history) > 0
    # Suites (hostless) never ask for a host: they run from their first tick until
    # their last child completes.
    with engine.connect() as conn:
        suite_states = set(
            conn.execute(
                select(q.c.status).join(afe_jobs, afe_jobs.c.id == q.c.job_id)
                .where(afe_jobs.c.name.startswith("suite-"), afe_jobs.c.created_on.is_not(None))
            ).scalars()
        )
    assert suite_states and suite_states <= {"Running", "Completed"}


def test_rdb_sim_cli_seeds_runs_and_prints_a_summary(
    db_url: str, amqp_url: str, queue_name: str, start_worker: Callable[..., object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    start_worker()

    code = main(["--amqp-url", amqp_url, "--db-url", db_url, "--queue", queue_name, "--ticks", "4",
                 "--hosts", "40", "--boards", "2", "--pools", "2", "--suites", "3"])

    out = capsys.readouterr().out
    assert code == 0
    values = dict(line.rsplit(None, 1) for line in out.strip().splitlines()[2:])
    assert values["ticks"] == "4"
    assert int(values["hosts leased"]) > 0


def test_rdb_sim_cli_reports_rdb_errors_with_exit_1(
    db_url: str, amqp_url: str, queue_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nobody consumes this queue: the first batch cannot be delivered.
    code = main(["--amqp-url", amqp_url, "--db-url", db_url, "--queue", queue_name, "--ticks", "1",
                 "--hosts", "10", "--boards", "1", "--pools", "1", "--suites", "1", "--timeout-s", "3"])

    assert code == 1
    assert "rdb error" in capsys.readouterr().err
