"""rdb-admin on a real database: explain, history, hosts, lock/unlock, release."""

from __future__ import annotations

import pytest

from rdb_client import AcquireHostRequest, RDBClient
from rdb_worker.admin import main
from tests.labkit import Lab


def run(db_url: str, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--db-url", db_url, *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def lab(engine) -> Lab:  # type: ignore[no-untyped-def]
    lab = Lab(engine)
    for i in range(4):
        lab.host(f"ok{i}", ("board:eve", "pool:bvt"), ("acl",))
    lab.host("locked", ("board:eve", "pool:bvt"), ("acl",), locked=True)
    lab.host("invalid", ("board:eve", "pool:bvt"), ("acl",), invalid=True)
    lab.host("otheracl", ("board:eve", "pool:bvt"), ("other",))
    lab.host("otherpool", ("board:eve", "pool:cq"), ("acl",))
    lab.host("repair", ("board:eve", "pool:bvt"), ("acl",), status="Repairing")
    lab.host("held", ("board:eve", "pool:bvt"), ("acl",), leased=True)
    return lab


def _steps(out: str) -> dict[str, int]:
    steps = {}
    for line in out.splitlines():
        parts = line.rsplit(None, 1)
        if len(parts) == 2 and parts[1].isdigit():
            steps[parts[0].strip()] = int(parts[1])
    return steps


def test_explain_counts_hosts_surviving_each_condition(lab: Lab, db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(db_url, capsys, "explain", "--deps", "board:eve,pool:bvt", "--acls", "acl")
    assert code == 0
    steps = _steps(out)
    assert steps["all hosts"] == 10
    assert steps["carries board:eve"] == 10
    assert steps["carries pool:bvt"] == 9
    assert steps["not invalid"] == 7
    assert steps["not locked"] == 6
    assert steps["status Ready (or NULL)"] == 5
    assert steps["not leased"] == 4
    assert "held" in out, "leased matching hosts are listed with their holder"


def test_explain_from_a_job(lab: Lab, db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    lab.user("sched", acls=("acl",))
    job = lab.job(owner="sched")
    with lab.engine.begin() as conn:
        from schema.tables import afe_jobs_dependency_labels

        conn.execute(afe_jobs_dependency_labels.insert().values(job_id=job, label_id=lab.label("pool:cq")))
    lab.hqe(job)
    code, out, _ = run(db_url, capsys, "explain", "--job", str(job))
    assert code == 0 and _steps(out)["not leased"] == 1


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("explain", "--deps", "board:nope", "--acls", "acl"), "board:nope"),
        (("explain", "--deps", "board:eve", "--acls", "nobody"), "nobody"),
        (("explain", "--job", "999999"), "999999"),
        (("history", "no-such-host"), "no-such-host"),
        (("lock", "no-such-host", "--reason", "x"), "no-such-host"),
    ],
)
def test_unknown_names_exit_2_and_say_which(lab: Lab, db_url: str, capsys, argv, words) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(db_url, capsys, *argv)
    assert code == 2 and words in err


def test_lock_unlock_are_recorded_and_respected(lab: Lab, db_url: str, client: RDBClient, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, _ = run(db_url, capsys, "lock", "ok0", "--reason", "flaky usb")
    assert code == 0
    row = lab.row(lab_id := next(i for i in range(1, 20) if lab.row(i)["hostname"] == "ok0"))
    assert row["locked"] == 1 and row["lock_reason"] == "flaky usb" and row["lock_time"] is not None
    req = AcquireHostRequest(deps={lab.label("board:eve")}, acls={lab.acl("acl")})
    got = {h.id for h in client.acquire_hosts([req] * 10) if h}
    assert lab_id not in got
    assert run(db_url, capsys, "unlock", "ok0")[0] == 0
    code, out, _ = run(db_url, capsys, "history", "ok0")
    assert code == 0 and "flaky usb" in out and "rdb-admin" in out


def test_release_only_if_still_held_by_the_shown_holder(lab: Lab, db_url: str, client: RDBClient, capsys) -> None:  # type: ignore[no-untyped-def]
    req = AcquireHostRequest(deps={lab.label("pool:cq")}, acls={lab.acl("acl")})
    (host,) = client.acquire_hosts([req])
    holder = lab.row(host.id)["leased_by"]
    code, _, err = run(db_url, capsys, "release", str(host.id), "--holder", "someone-else")
    assert code == 1 and holder in err
    assert lab.row(host.id)["leased"] == 1
    assert run(db_url, capsys, "release", str(host.id), "--holder", holder)[0] == 0
    assert lab.row(host.id)["leased"] == 0
    code, out, _ = run(db_url, capsys, "history", str(host.id))
    assert [line.split()[3] for line in out.splitlines()[2:]] == ["lease", "release"]


def test_hosts_table_counts_the_lab(lab: Lab, db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(db_url, capsys, "hosts")
    assert code == 0
    bvt = next(line for line in out.splitlines() if line.startswith("eve") and " bvt " in f" {line} ")
    hosts, ready, free, leased, locked, invalid = map(int, bvt.split()[2:8])
    # free: ok0-3 and otheracl (free for someone, if not for this acl)
    assert (hosts, free, leased, locked, invalid) == (9, 5, 1, 1, 1)


def test_explain_names_holders_even_of_hosts_dropped_later(lab: Lab, db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    stuck = lab.host("stuck", ("board:eve", "pool:cq"), ("acl",), leased=True, status="Provisioning")
    code, out, _ = run(db_url, capsys, "explain", "--deps", "board:eve,pool:cq", "--acls", "acl")
    assert code == 0
    line = next(line for line in out.splitlines() if line.split()[:1] == [str(stuck)])
    assert "Provisioning" in line, "a leased host that is not Ready is still listed with its state"


def test_explain_of_a_hostless_suite_job_says_so(lab: Lab, db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    lab.user("sched", acls=("acl",))
    suite = lab.job(owner="sched")
    lab.hqe(suite)
    code, out, _ = run(db_url, capsys, "explain", "--job", str(suite))
    assert code == 0 and "hostless" in out


def test_set_status_is_recorded(lab: Lab, db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(db_url, capsys, "set-status", "repair", "Ready")[0] == 0
    code, out, _ = run(db_url, capsys, "history", "repair")
    assert code == 0 and "Repairing" in out and "Ready" in out


def test_hosts_with_labels_lists_each_host_and_its_holder(lab: Lab, db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(db_url, capsys, "hosts", "--label", "board:eve,pool:cq")
    assert code == 0
    assert "otherpool" in out and "ok0" not in out and "1 host(s)" in out
    code, _, err = run(db_url, capsys, "hosts", "--label", "pool:nope")
    assert code == 2 and "pool:nope" in err
