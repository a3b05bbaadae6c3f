"""JobQueryManager against a real, freshly migrated MariaDB."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import pytest
from sqlalchemy import Engine, event

from rdb_client.exceptions import InvalidRequestError
from rdb_client.jobs import PROVISIONABLE_PREFIXES, JobQueryManager
from rdb_client.requests import AcquireHostRequest
from schema.tables import (
    afe_acl_groups,
    afe_acl_groups_users,
    afe_host_queue_entries,
    afe_hosts,
    afe_job_keyvals,
    afe_jobs,
    afe_jobs_dependency_labels,
    afe_labels,
    afe_users,
)


class Afe:
    """Just enough of the AFE to write jobs, HQEs and who may use what."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _insert(self, table, **values) -> int:  # type: ignore[no-untyped-def]
        with self.engine.begin() as conn:
            return int(conn.execute(table.insert().values(**values)).inserted_primary_key[0])

    def label(self, name: str, *, platform: bool = False) -> int:
        return self._insert(afe_labels, name=name, platform=int(platform), invalid=0, only_if_needed=0)

    def user(self, login: str, acls: Iterable[int] = ()) -> int:
        user_id = self._insert(afe_users, login=login, reboot_before=0, reboot_after=0)
        for acl in acls:
            self._insert(afe_acl_groups_users, aclgroup_id=acl, user_id=user_id)
        return user_id

    def acl(self, name: str) -> int:
        return self._insert(afe_acl_groups, name=name, description="")

    def host(self, hostname: str) -> int:
        return self._insert(afe_hosts, hostname=hostname, status="Ready", protection=0, dirty=0)

    def job(
        self,
        *,
        owner: str = "sim",
        priority: int | None = 10,
        deps: Iterable[int] = (),
        parent_job_id: int | None = None,
    ) -> int:
        job_id = self._insert(
            afe_jobs, owner=owner, name="job", priority=priority, timeout=24, email_list="",
            reboot_before=0, reboot_after=0, max_runtime_hrs=72, parent_job_id=parent_job_id,
        )
        for dep in deps:
            self._insert(afe_jobs_dependency_labels, job_id=job_id, label_id=dep)
        return job_id

    def hqe(
        self,
        job_id: int,
        *,
        host_id: int | None = None,
        meta_host: int | None = None,
        active: int = 0,
        complete: int = 0,
    ) -> int:
        return self._insert(
            afe_host_queue_entries, job_id=job_id, host_id=host_id, meta_host=meta_host,
            status="Running" if active else "Queued", active=active, complete=complete,
            deleted=0, execution_subdir="",
        )

    def keyval(self, job_id: int, key: str, value: str) -> None:
        self._insert(afe_job_keyvals, job_id=job_id, key=key, value=value)

    def suite(self, min_duts: str | None) -> int:
        suite_id = self.job()
        if min_duts is not None:
            self.keyval(suite_id, "suite_min_duts", min_duts)
        return suite_id


@pytest.fixture
def afe(engine: Engine) -> Afe:
    return Afe(engine)


@pytest.fixture
def jqm(db_url: str) -> Iterator[JobQueryManager]:
    with JobQueryManager(db_url) as manager:
        yield manager


def one(jqm: JobQueryManager, hqe_id: int) -> AcquireHostRequest:
    (request,) = jqm.acquire_requests([hqe_id])
    return request


def test_deps_are_the_job_dependencies_plus_the_meta_host(afe: Afe, jqm: JobQueryManager) -> None:
    board, pool, other = afe.label("board:eve"), afe.label("pool:bvt"), afe.label("pool:cq")
    job = afe.job(deps=[board, pool])
    with_meta = afe.hqe(job, meta_host=other)
    plain = afe.hqe(afe.job(deps=[board]))
    meta_only = afe.hqe(afe.job(), meta_host=pool)

    requests = jqm.acquire_requests([with_meta, plain, meta_only])

    assert [r.deps for r in requests] == [{board, pool, other}, {board}, {pool}]
    assert all(r.preferred_deps == frozenset() for r in requests)


@pytest.mark.parametrize("prefix", PROVISIONABLE_PREFIXES)
def test_provisionable_labels_move_to_preferred_deps(afe: Afe, jqm: JobQueryManager, prefix: str) -> None:
    board = afe.label("board:eve")
    version = afe.label(f"{prefix}R99-1234.0.0")

    request = one(jqm, afe.hqe(afe.job(deps=[board, version])))

    assert request.deps == {board}
    assert request.preferred_deps == {version}


def test_provisionable_meta_host_is_preferred_not_required(afe: Afe, jqm: JobQueryManager) -> None:
    board = afe.label("board:eve")
    version = afe.label("cros-version:R99-1234.0.0")

    request = one(jqm, afe.hqe(afe.job(deps=[board]), meta_host=version))

    assert request.deps == {board}
    assert request.preferred_deps == {version}


def test_label_merely_containing_a_provisionable_prefix_stays_required(afe: Afe, jqm: JobQueryManager) -> None:
    odd = afe.label("board:cros-version:x")

    assert one(jqm, afe.hqe(afe.job(deps=[odd]))).deps == {odd}


def test_prejob_action_labels_are_dropped(afe: Afe, db_url: str) -> None:
    board = afe.label("board:eve")
    cleanup = afe.label("cleanup")
    repair = afe.label("repair")
    version = afe.label("cros-version:R99-1234.0.0")
    hqe = afe.hqe(afe.job(deps=[board, cleanup, version]), meta_host=repair)

    with JobQueryManager(db_url, prejob_action_labels=["cleanup", "repair"]) as manager:
        request = one(manager, hqe)

    assert request.deps == {board}
    assert request.preferred_deps == {version}


def test_prejob_action_labels_are_kept_as_deps_when_not_configured(afe: Afe, jqm: JobQueryManager) -> None:
    cleanup = afe.label("cleanup")

    assert one(jqm, afe.hqe(afe.job(deps=[cleanup]))).deps == {cleanup}


def test_prejob_action_labels_given_as_one_string_are_refused(db_url: str) -> None:
    with pytest.raises(TypeError):
        JobQueryManager(db_url, prejob_action_labels="cleanup")


def test_acls_are_the_groups_of_the_job_owner(afe: Afe, jqm: JobQueryManager) -> None:
    mine, shared, theirs = afe.acl("mine"), afe.acl("shared"), afe.acl("theirs")
    afe.user("alice", [mine, shared])
    afe.user("bob", [theirs, shared])
    afe.user("carol")

    alice, bob, carol, nobody = jqm.acquire_requests(
        [
            afe.hqe(afe.job(owner="alice")),
            afe.hqe(afe.job(owner="bob")),
            afe.hqe(afe.job(owner="carol")),
            afe.hqe(afe.job(owner="nobody")),
        ]
    )

    assert alice.acls == {mine, shared}
    assert bob.acls == {theirs, shared}
    assert carol.acls == frozenset()
    assert nobody.acls == frozenset()


def test_priority_is_the_job_priority_and_null_counts_as_zero(afe: Afe, jqm: JobQueryManager) -> None:
    high = afe.hqe(afe.job(priority=50))
    negative = afe.hqe(afe.job(priority=-5))
    null = afe.hqe(afe.job(priority=None))

    assert [r.priority for r in jqm.acquire_requests([high, negative, null])] == [50, -5, 0]


def test_pinned_hqe_asks_for_its_host_and_others_for_none(afe: Afe, jqm: JobQueryManager) -> None:
    host = afe.host("h1")
    job = afe.job()
    pinned = afe.hqe(job, host_id=host)
    free = afe.hqe(afe.job())

    pinned_request, free_request = jqm.acquire_requests([pinned, free])

    assert pinned_request.host_id == host
    assert pinned_request.is_validation
    assert free_request.host_id is None


def test_job_without_parent_has_parent_zero_and_no_minimum(afe: Afe, jqm: JobQueryManager) -> None:
    request = one(jqm, afe.hqe(afe.job()))

    assert request.parent_job_id == 0
    assert request.suite_min_duts == 0


def test_suite_min_duts_is_the_keyval_when_the_suite_holds_no_hosts(afe: Afe, jqm: JobQueryManager) -> None:
    suite = afe.suite("4")

    request = one(jqm, afe.hqe(afe.job(parent_job_id=suite)))

    assert request.parent_job_id == suite
    assert request.suite_min_duts == 4


def test_suite_min_duts_subtracts_distinct_hosts_of_active_incomplete_child_hqes(
    afe: Afe, jqm: JobQueryManager
) -> None:
    suite = afe.suite("5")
    other_suite = afe.suite("5")
    h1, h2, h3, h4, h5 = (afe.host(f"h{i}") for i in range(1, 6))
    # Counted: two children running on h1 (one host, counted once) and one on h2.
    afe.hqe(afe.job(parent_job_id=suite), host_id=h1, active=1)
    afe.hqe(afe.job(parent_job_id=suite), host_id=h1, active=1)
    afe.hqe(afe.job(parent_job_id=suite), host_id=h2, active=1)
    # Not counted: finished, merely assigned, active without a host, another suite's.
    afe.hqe(afe.job(parent_job_id=suite), host_id=h3, active=1, complete=1)
    afe.hqe(afe.job(parent_job_id=suite), host_id=h4, active=0)
    afe.hqe(afe.job(parent_job_id=suite), active=1)
    afe.hqe(afe.job(parent_job_id=other_suite), host_id=h5, active=1)
    # The suite's own hostless HQE is not a child's.
    afe.hqe(suite, active=1)

    pending = afe.hqe(afe.job(parent_job_id=suite))
    other_pending = afe.hqe(afe.job(parent_job_id=other_suite))

    mine, other = jqm.acquire_requests([pending, other_pending])

    assert mine.suite_min_duts == 5 - 2
    assert other.suite_min_duts == 5 - 1


def test_suite_min_duts_never_goes_below_zero(afe: Afe, jqm: JobQueryManager) -> None:
    suite = afe.suite("1")
    for i in range(3):
        afe.hqe(afe.job(parent_job_id=suite), host_id=afe.host(f"h{i}"), active=1)

    assert one(jqm, afe.hqe(afe.job(parent_job_id=suite))).suite_min_duts == 0


def test_suite_without_min_duts_keyval_has_no_minimum(afe: Afe, jqm: JobQueryManager) -> None:
    suite = afe.suite(None)
    afe.keyval(suite, "other_key", "7")

    request = one(jqm, afe.hqe(afe.job(parent_job_id=suite)))

    assert request.parent_job_id == suite
    assert request.suite_min_duts == 0


def test_non_integer_suite_min_duts_counts_as_zero_with_a_warning(
    afe: Afe, jqm: JobQueryManager, caplog: pytest.LogCaptureFixture
) -> None:
    suite = afe.suite("lots")

    with caplog.at_level(logging.WARNING, logger="rdb_client.jobs"):
        request = one(jqm, afe.hqe(afe.job(parent_job_id=suite)))

    assert request.suite_min_duts == 0
    assert any("lots" in record.getMessage() for record in caplog.records)


def test_requests_come_back_in_the_order_the_ids_were_given(afe: Afe, jqm: JobQueryManager) -> None:
    hqes = [afe.hqe(afe.job(priority=p)) for p in range(6)]
    order = [hqes[3], hqes[0], hqes[5], hqes[1], hqes[4], hqes[2], hqes[0]]

    requests = jqm.acquire_requests(order)

    assert [r.priority for r in requests] == [3, 0, 5, 1, 4, 2, 0]


def test_no_ids_means_no_requests(jqm: JobQueryManager) -> None:
    assert jqm.acquire_requests([]) == []


def test_unknown_hqe_ids_raise_naming_every_unknown_id(afe: Afe, jqm: JobQueryManager) -> None:
    known = afe.hqe(afe.job())

    with pytest.raises(InvalidRequestError) as caught:
        jqm.acquire_requests([known, known + 1000, known + 2000])

    assert str(known + 1000) in str(caught.value)
    assert str(known + 2000) in str(caught.value)
    assert caught.value.field == "hqe_ids"


def test_hqe_ids_that_are_not_ints_are_refused(jqm: JobQueryManager) -> None:
    with pytest.raises(InvalidRequestError, match="'7'"):
        jqm.acquire_requests(["7"])  # type: ignore[list-item]


def test_query_count_does_not_grow_with_the_number_of_hqes(afe: Afe, jqm: JobQueryManager) -> None:
    acl = afe.acl("everyone")
    suites = [afe.suite("3") for _ in range(3)]
    labels = [afe.label(f"board:b{i}") for i in range(3)]
    hqes = []
    for i in range(60):
        owner = f"user{i % 4}"
        if i < 4:
            afe.user(owner, [acl])
        hqes.append(afe.hqe(afe.job(owner=owner, deps=[labels[i % 3]], parent_job_id=suites[i % 3])))

    jqm.acquire_requests(hqes[:1])  # connect first: the dialect's own queries are not ours
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(jqm._engine, "before_cursor_execute", count)
    try:
        requests = jqm.acquire_requests(hqes)
    finally:
        event.remove(jqm._engine, "before_cursor_execute", count)

    assert len(requests) == 60
    assert all(r.acls == {acl} and r.suite_min_duts == 3 for r in requests)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 6, selects
