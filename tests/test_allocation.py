"""Pure allocation rules: coalescing, ordering, suite minimums, preferences, validation."""

from __future__ import annotations

from rdb_client.requests import AcquireHostRequest as Acq
from rdb_worker.allocation import Candidates, PinnedHost, coalesce, plan

BOARD, POOL, VERSION = 1, 2, 3
ACL = 10


def lab(n: int, *, labels: dict[int, set[int]] | None = None) -> Candidates:
    hosts = set(range(1, n + 1))
    return Candidates(
        available=set(hosts),
        label_hosts=labels if labels is not None else {BOARD: set(hosts), POOL: set(hosts)},
        acl_hosts={ACL: set(hosts)},
    )


def req(**kw: object) -> Acq:
    kw.setdefault("deps", {BOARD})
    kw.setdefault("acls", {ACL})
    return Acq(**kw)  # type: ignore[arg-type]


def test_identical_requests_coalesce_into_one_group_with_a_count() -> None:
    a, b = req(), req(deps={BOARD, POOL})
    counts, positions = coalesce([a, b, a, a])
    assert counts[a] == 3 and counts[b] == 1
    assert positions[a] == [0, 2, 3]


def test_identical_requests_each_get_a_different_host_then_none() -> None:
    result = plan([req()] * 4, lab(3), {})
    assert result[:3] == [1, 2, 3]
    assert result[3] is None


def test_request_without_acls_matches_nothing() -> None:
    assert plan([req(acls=())], lab(3), {}) == [None]


def test_all_deps_required_and_one_acl_is_enough() -> None:
    candidates = Candidates(
        available={1, 2, 3},
        label_hosts={BOARD: {1, 2, 3}, POOL: {2, 3}},
        acl_hosts={ACL: {3}, 11: {2}},
    )
    assert plan([req(deps={BOARD, POOL}, acls={ACL, 11})] * 3, candidates, {}) == [2, 3, None]


def test_higher_priority_served_first_when_hosts_run_out() -> None:
    low, high = req(priority=0), req(priority=10)
    assert plan([low, high], lab(1), {}) == [None, 1]


def test_equal_priority_non_suite_before_suite_child_then_position() -> None:
    child = req(parent_job_id=7)
    plain = req(deps={BOARD, POOL})
    assert plan([child, plain], lab(1), {}) == [None, 1]


def test_suite_minimum_protected_against_higher_priority_suite() -> None:
    high = req(priority=50, parent_job_id=1, suite_min_duts=1)
    low = req(priority=0, parent_job_id=2, suite_min_duts=2, deps={BOARD, POOL})
    result = plan([high] * 4 + [low] * 3, lab(4), {})
    # first pass: suite 1 gets 1, suite 2 gets its 2; second pass: suite 1 takes the last one
    assert sorted(h for h in result[4:] if h) == [2, 3]
    assert result[:4].count(None) == 2
    assert result[4:].count(None) == 1


def test_suite_minimum_shared_by_groups_and_largest_wins() -> None:
    g1 = req(parent_job_id=5, suite_min_duts=1, deps={BOARD})
    g2 = req(parent_job_id=5, suite_min_duts=3, deps={BOARD, POOL})
    other = req(priority=100, parent_job_id=9, suite_min_duts=0)
    result = plan([other] * 5 + [g1, g2, g2], lab(5), {})
    # suite 5's minimum is 3 (largest), filled across both of its groups before suite 9's extra
    assert all(h is not None for h in result[5:])
    assert result[:5].count(None) == 3


def test_preferred_deps_then_lowest_id() -> None:
    candidates = lab(5)
    candidates.label_hosts[VERSION] = {4, 5}
    result = plan([req(preferred_deps={VERSION})] * 3, candidates, {})
    assert result == [4, 5, 1]


def test_validation_beats_acquisition_for_the_same_host() -> None:
    pinned = {1: PinnedHost(1, False, False, False, frozenset({BOARD}), frozenset({ACL}))}
    result = plan([req(priority=100), req(host_id=1)], lab(1), pinned)
    assert result == [None, 1]


def test_two_validations_of_one_host_higher_priority_wins() -> None:
    pinned = {1: PinnedHost(1, False, False, False, frozenset({BOARD}), frozenset({ACL}))}
    result = plan([req(host_id=1, priority=1), req(host_id=1, priority=5)], lab(1), pinned)
    assert result == [None, 1]


def test_validation_refuses_leased_locked_missing_dep_and_acl_mismatch() -> None:
    def ph(**kw: object) -> PinnedHost:
        base = dict(id=1, leased=False, locked=False, invalid=False, labels=frozenset({BOARD}), acls=frozenset({ACL}))
        base.update(kw)
        return PinnedHost(**base)  # type: ignore[arg-type]

    r = req(host_id=1)
    assert plan([r], lab(0), {1: ph(leased=True)}) == [None]
    assert plan([r], lab(0), {1: ph(locked=True)}) == [None]
    assert plan([r], lab(0), {1: ph(labels=frozenset())}) == [None]
    assert plan([r], lab(0), {1: ph(acls=frozenset())}) == [None]
    assert plan([r], lab(0), {}) == [None]


def test_invalid_one_time_host_waives_only_the_acl_check() -> None:
    one_time = PinnedHost(1, False, False, True, frozenset({BOARD}), frozenset())
    assert plan([req(host_id=1)], lab(0), {1: one_time}) == [1]
    locked = PinnedHost(1, False, True, True, frozenset({BOARD}), frozenset())
    assert plan([req(host_id=1)], lab(0), {1: locked}) == [None]


def test_taken_hosts_are_never_picked() -> None:
    assert plan([req()] * 2, lab(3), {}, taken={1}) == [2, 3]


def test_truncated_kind_list_that_runs_out_is_reported_for_a_refetch() -> None:
    from rdb_worker.allocation import kind_of

    wide, narrow = req(), req(deps={BOARD, POOL}, priority=5)
    candidates = Candidates(
        kind_lists={kind_of(wide): [1, 2], kind_of(narrow): [1, 2, 3]},
        truncated={kind_of(wide)},
    )
    exhausted: set = set()
    result = plan([wide, narrow, narrow], candidates, {}, exhausted=exhausted)
    assert result == [None, 1, 2]
    assert exhausted == {kind_of(wide)}, "the wide kind's prefix was used up by the narrow one"
    exhausted.clear()
    candidates.truncated.clear()
    plan([wide, narrow, narrow], candidates, {}, exhausted=exhausted)
    assert exhausted == set(), "a complete list that runs out just means no host"
