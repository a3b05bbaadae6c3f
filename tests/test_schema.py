"""Migrations: fresh databases, re-runs, and adopting a real autotest_web schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from schema import migrate
from schema.tables import metadata

# A real autotest_web schema dump (MySQL 5.5, migrate_info 68), kept with the tests so they
# don't depend on where the checkout sits.
AUTOTEST_DUMP = Path(__file__).resolve().parent / "data" / "autotest-schema-068.sql"


def _diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            diff = compare_metadata(ctx, metadata)
    finally:
        engine.dispose()
    return [d for d in diff if not (isinstance(d, tuple) and d[0] == "remove_table")]


def test_migrations_and_metadata_describe_the_same_database(db_url: str) -> None:
    assert _diff(db_url) == []


def test_upgrade_is_safe_to_run_again_and_from_any_revision(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url, "0002")
    migrate.upgrade(empty_db_url)
    migrate.upgrade(empty_db_url)
    # A half-applied revision: its first column exists, the stamp does not.
    migrate.downgrade(empty_db_url, "0002")
    engine = create_engine(empty_db_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE afe_hosts ADD COLUMN leased_by VARCHAR(64) NULL"))
    migrate.upgrade(empty_db_url)
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()
    assert _diff(empty_db_url) == []


def test_new_hosts_start_leased(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO afe_hosts (hostname, protection, dirty) VALUES ('new', 0, 0)"))
        assert conn.execute(text("SELECT leased FROM afe_hosts")).scalar() == 1


def _load_dump(url: str) -> None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    sql = AUTOTEST_DUMP.read_text()
    proc = subprocess.run(
        ["mariadb", "-h", u.host or "127.0.0.1", "-P", str(u.port or 3306), "-u", u.username or "root",
         f"-p{u.password or ''}", u.database or ""],
        input=sql, text=True, capture_output=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def autotest_db_url(empty_db_url: str) -> str:
    if not AUTOTEST_DUMP.exists():
        pytest.fail(f"the autotest schema dump is missing: {AUTOTEST_DUMP}")
    _load_dump(empty_db_url)
    engine = create_engine(empty_db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO afe_users (id, login, reboot_before, reboot_after) VALUES (1, 'autotest', 0, 0)"))
        conn.execute(text("INSERT INTO afe_hosts (id, hostname, status, protection, dirty) VALUES (7, 'chromeos1-row1-host1', 'Ready', 0, 0)"))
        conn.execute(text("INSERT INTO afe_labels (id, name, platform, invalid, only_if_needed) VALUES (3, 'board:eve', 0, 0, 0)"))
        conn.execute(text("INSERT INTO afe_hosts_labels (host_id, label_id) VALUES (7, 3)"))
        conn.execute(text("INSERT INTO afe_acl_groups (id, name) VALUES (2, 'Everyone')"))
        conn.execute(text("INSERT INTO afe_acl_groups_hosts (aclgroup_id, host_id) VALUES (2, 7)"))
    engine.dispose()
    return empty_db_url


def test_rdb_schema_upgrade_adopts_autotest_database_keeping_rows(autotest_db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "schema.cli", "upgrade", "--db-url", autotest_db_url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"head: {migrate.head_revision()}" in result.stdout
    engine = create_engine(autotest_db_url)
    insp = inspect(engine)
    assert {"leased", "leased_by", "leased_at", "lock_reason"} <= {c["name"] for c in insp.get_columns("afe_hosts")}
    assert "parent_job_id" in {c["name"] for c in insp.get_columns("afe_jobs")}
    assert insp.has_table("tko_tests"), "autotest's other tables are left alone"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT hostname, leased FROM afe_hosts WHERE id = 7")).one() == ("chromeos1-row1-host1", 1)
        assert conn.execute(text("SELECT version FROM migrate_info")).scalar() == 68
    engine.dispose()


def test_rdb_serves_an_adopted_autotest_database(autotest_db_url: str, amqp_url: str, queue_name: str) -> None:
    from rdb_client import AcquireHostRequest, RDBClient
    from rdb_worker.worker import Worker

    migrate.upgrade(autotest_db_url)
    worker = Worker(amqp_url, autotest_db_url, queue=queue_name)
    worker.start()
    try:
        with RDBClient(amqp_url, timeout_s=20, queue=queue_name) as client:
            assert client.release_hosts() == [7]  # adopted hosts start leased, with no lease time
            (host,) = client.acquire_hosts([AcquireHostRequest(deps={3}, acls={2})])
            assert host is not None and host.hostname == "chromeos1-row1-host1" and host.labels == ["board:eve"]
    finally:
        worker.stop()


def test_rdb_schema_cli_says_what_is_missing() -> None:
    result = subprocess.run([sys.executable, "-m", "schema.cli", "upgrade"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "RDB_DB_URL" in result.stderr
