"""Record and replay: what the scheduler asked, what the rdb answered, and asking again."""

from __future__ import annotations

import json

import msgpack
import pytest
from sqlalchemy import text

from rdb_client import AcquireHostRequest, RDBClient, UpdateHostRequest
from rdb_client.protocol import BrokerNames
from rdb_worker import recording
from rdb_worker.replay import main
from rdb_worker.transport import publish_record
from schema import migrate
from tests.labkit import Lab
from tests.procs import wait_for

MUTABLE = ("status", "locked", "leased", "leased_by", "leased_at", "dirty", "lock_reason", "invalid")


def snapshot(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE hosts_snapshot AS SELECT * FROM afe_hosts"))


def restore(engine) -> None:  # type: ignore[no-untyped-def]
    sets = ", ".join(f"h.{c} = s.{c}" for c in MUTABLE)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE afe_hosts h JOIN hosts_snapshot s ON s.id = h.id SET {sets}"))


def replay(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture
def recorded(engine, client: RDBClient, amqp_url: str, queue_name: str):  # type: ignore[no-untyped-def]
    """A lab, and a recorded sequence of acquire, update, release and acquire batches."""
    lab = Lab(engine)
    ids = [lab.host(f"h{i}", ("board:eve",), ("acl",)) for i in range(4)]
    snapshot(engine)
    req = AcquireHostRequest(deps={lab.label("board:eve")}, acls={lab.acl("acl")})
    first = client.acquire_hosts([req] * 3)
    client.update_hosts([UpdateHostRequest(first[0].id, {"status": "Repairing"})])
    client.update_hosts([UpdateHostRequest(first[1].id, {"nonsense": 1})])
    released = client.release_hosts(grace_s=0)
    second = client.acquire_hosts([req] * 3)
    wait_for(lambda: len(replay_rows(amqp_url, queue_name)) == 5, 20, "5 recorded batches")
    return lab, ids, first, released, second


def replay_rows(amqp_url: str, queue_name: str) -> list:
    from rdb_worker.transport import read_stream

    return list(read_stream(amqp_url, BrokerNames(queue_name).record_stream, idle_timeout_s=0.5))


def test_show_lists_batches_with_their_replies(recorded, amqp_url: str, queue_name: str, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, ids, first, released, second = recorded
    code, rows = replay(capsys, "show", "--amqp-url", amqp_url, "--queue", queue_name, "--json")
    assert code == 0
    assert [r["kind"] for r in rows] == ["acquire", "update", "update", "release", "acquire"]
    assert [h["id"] for h in rows[0]["reply"]["results"]] == [h.id for h in first]
    assert rows[2]["reply"]["results"][0]["type"] == "UnknownColumnError"
    code, rows = replay(capsys, "show", "--amqp-url", amqp_url, "--queue", queue_name, "--json",
                        "--batch", rows[3]["batch_id"])
    assert [r["kind"] for r in rows] == ["release"]
    assert main(["show", "--amqp-url", amqp_url, "--queue", queue_name]) == 0
    table = capsys.readouterr().out
    assert "offset" in table and "acquire" in table


def test_dry_run_reproduces_the_answers_and_changes_nothing(recorded, engine, amqp_url: str, queue_name: str, db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, ids, first, released, second = recorded
    restore(engine)
    before = {i: lab.row(i) for i in ids}
    code, rows = replay(capsys, "dry-run", "--amqp-url", amqp_url, "--queue", queue_name, "--db-url", db_url, "--json")
    assert code == 0
    assert [r["status"] for r in rows] == ["same"] * 5, rows
    assert {i: lab.row(i) for i in ids} == before, "a dry run rolls everything back"

    # Lock the host the first batch got first: exactly the answers that involve it change.
    victim = first[0].id
    with engine.begin() as conn:
        conn.execute(text("UPDATE afe_hosts SET locked = 1 WHERE id = :id"), {"id": victim})
    code, rows = replay(capsys, "dry-run", "--amqp-url", amqp_url, "--queue", queue_name, "--db-url", db_url, "--json")
    assert code == 0
    # acquire: another host instead of the locked one; the updates still apply; the release
    # now frees the substitute too; the last acquisition gets what it got before.
    assert [r["status"] for r in rows] == ["differs", "same", "same", "differs", "same"]
    assert victim not in rows[0]["now"] and victim in rows[0]["recorded"]
    assert rows[3]["recorded"] == [[h.id for h in first[1:]]]
    assert [h.id for h in second if h] == [h for h in rows[4]["now"] if h]


def test_old_protocol_records_are_skipped_with_a_reason(recorded, amqp_url: str, queue_name: str, capsys) -> None:  # type: ignore[no-untyped-def]
    old = msgpack.packb({"v": 0, "kind": "acquire", "batch_id": "old", "requests": []})
    publish_record(amqp_url, BrokerNames(queue_name).record_stream,
                   recording.encode_record("old", "acquire", "w", "old", old, b"\x80"))
    publish_record(amqp_url, BrokerNames(queue_name).record_stream, b"not a record")
    code, rows = replay(capsys, "show", "--amqp-url", amqp_url, "--queue", queue_name, "--json")
    assert code == 0 and len(rows) == 7
    assert "UnsupportedVersionError" in rows[5]["skipped"]
    assert "unreadable record" in rows[6]["skipped"]


def test_dry_run_refuses_a_database_at_the_wrong_revision(recorded, amqp_url: str, queue_name: str, admin_engine, admin_db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.engine import make_url

    with admin_engine.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS rdbt_old_revision"))
        conn.execute(text("CREATE DATABASE rdbt_old_revision"))
    old_url = make_url(admin_db_url).set(database="rdbt_old_revision").render_as_string(hide_password=False)
    try:
        migrate.upgrade(old_url, "0003")
        code = main(["dry-run", "--amqp-url", amqp_url, "--queue", queue_name, "--db-url", old_url])
        assert code == 2 and "0003" in capsys.readouterr().err
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS rdbt_old_revision"))


def test_publish_needs_an_explicit_flag_then_sends_under_new_ids(recorded, engine, amqp_url: str, queue_name: str, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["publish", "--amqp-url", amqp_url, "--queue", queue_name]) == 2
    capsys.readouterr()
    restore(engine)
    code, rows = replay(capsys, "publish", "--amqp-url", amqp_url, "--queue", queue_name, "--yes-publish",
                        "--kind", "acquire", "--limit", "1", "--json")
    assert code == 0 and len(rows) == 1
    assert rows[0]["status"] == "same" and rows[0]["new_batch_id"] != rows[0]["batch_id"]
