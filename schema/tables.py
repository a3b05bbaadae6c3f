"""SQLAlchemy Core metadata of the tables the rdb reads and writes, at the head revision.

The migrations under ``schema/migrations`` carry their own frozen copies of these
definitions (a migration must keep meaning what it meant when it was written);
``tests/test_schema.py`` checks that both describe the same database.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.mysql import BIGINT, DATETIME, MEDIUMBLOB, TINYINT

metadata = MetaData()

BOOL = TINYINT(display_width=1)

afe_users = Table(
    "afe_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("login", String(255)),
    Column("access_level", Integer, server_default=text("0")),
    Column("reboot_before", SmallInteger, nullable=False),
    Column("reboot_after", SmallInteger, nullable=False),
    Column("show_experimental", BOOL, nullable=False, server_default=text("0")),
    Column("drone_set_id", Integer),
    Index("afe_users_drone_set_ibfk", "drone_set_id"),
    mysql_engine="InnoDB",
)

afe_hosts = Table(
    "afe_hosts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hostname", String(255)),
    Column("locked", BOOL, server_default=text("0")),
    Column("synch_id", Integer),
    Column("status", String(255)),
    Column("invalid", BOOL, server_default=text("0")),
    Column("protection", Integer, nullable=False),
    Column("locked_by_id", Integer, ForeignKey("afe_users.id", name="hosts_locked_by_fk")),
    Column("lock_time", DateTime),
    Column("dirty", BOOL, nullable=False),
    # rdb additions. A new host starts leased: it is handed out only after a release
    # cycle has seen it Ready with nothing running on it.
    Column("leased", BOOL, nullable=False, server_default=text("1")),
    Column("leased_by", String(64)),
    Column("leased_at", DATETIME(fsp=6)),
    Column("lock_reason", Text),
    Index("hosts_leased_locked", "leased", "locked"),
    Index("hosts_locked_by_fk", "locked_by_id"),
    mysql_engine="InnoDB",
)

afe_labels = Table(
    "afe_labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(750), unique=True),
    Column("kernel_config", String(255)),
    Column("platform", BOOL, server_default=text("0")),
    Column("invalid", BOOL, nullable=False),
    Column("only_if_needed", BOOL, nullable=False),
    Column("atomic_group_id", Integer),
    Index("atomic_group_id", "atomic_group_id"),
    mysql_engine="InnoDB",
)

afe_hosts_labels = Table(
    "afe_hosts_labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host_id", Integer, ForeignKey("afe_hosts.id", name="hosts_labels_host_id_fk")),
    Column("label_id", Integer, ForeignKey("afe_labels.id", name="hosts_labels_label_id_fk")),
    UniqueConstraint("label_id", "host_id", name="hosts_labels_both_ids"),
    Index("hosts_labels_host_id", "host_id"),
    mysql_engine="InnoDB",
)

afe_acl_groups = Table(
    "afe_acl_groups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255)),
    Column("description", String(255)),
    mysql_engine="InnoDB",
)

afe_acl_groups_hosts = Table(
    "afe_acl_groups_hosts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "aclgroup_id", Integer, ForeignKey("afe_acl_groups.id", name="acl_groups_hosts_aclgroup_id_fk")
    ),
    Column("host_id", Integer, ForeignKey("afe_hosts.id", name="acl_groups_hosts_host_id_fk")),
    UniqueConstraint("aclgroup_id", "host_id", name="acl_groups_hosts_both_ids"),
    Index("acl_groups_hosts_host_id", "host_id"),
    mysql_engine="InnoDB",
)

afe_acl_groups_users = Table(
    "afe_acl_groups_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "aclgroup_id", Integer, ForeignKey("afe_acl_groups.id", name="acl_groups_users_aclgroup_id_fk")
    ),
    Column("user_id", Integer, ForeignKey("afe_users.id", name="acl_groups_users_user_id_fk")),
    UniqueConstraint("aclgroup_id", "user_id", name="acl_groups_users_both_ids"),
    Index("acl_groups_users_user_id", "user_id"),
    mysql_engine="InnoDB",
)

afe_jobs = Table(
    "afe_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(255)),
    Column("name", String(255)),
    Column("priority", Integer),
    Column("control_file", Text),
    Column("control_type", Integer),
    Column("created_on", DateTime),
    Column("synch_count", Integer),
    Column("timeout", Integer, nullable=False),
    Column("run_verify", BOOL, server_default=text("1")),
    Column("email_list", String(250), nullable=False),
    Column("reboot_before", SmallInteger, nullable=False),
    Column("reboot_after", SmallInteger, nullable=False),
    Column("parse_failed_repair", BOOL, nullable=False, server_default=text("1")),
    Column("max_runtime_hrs", Integer, nullable=False),
    Column("drone_set_id", Integer),
    Column("parameterized_job_id", Integer),
    # rdb addition: the suite (hostless parent job) this job belongs to.
    Column("parent_job_id", Integer),
    Index("created_on", "created_on"),
    Index("afe_jobs_drone_set_ibfk", "drone_set_id"),
    Index("afe_jobs_parameterized_job_ibfk", "parameterized_job_id"),
    Index("afe_jobs_parent_job_id", "parent_job_id"),
    mysql_engine="InnoDB",
)

afe_jobs_dependency_labels = Table(
    "afe_jobs_dependency_labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "job_id", Integer, ForeignKey("afe_jobs.id", name="jobs_dependency_labels_job_id_fk"), nullable=False
    ),
    Column(
        "label_id",
        Integer,
        ForeignKey("afe_labels.id", name="jobs_dependency_labels_label_id_fk"),
        nullable=False,
    ),
    UniqueConstraint("job_id", "label_id", name="job_id"),
    Index("jobs_dependency_labels_label_id_fk", "label_id"),
    mysql_engine="InnoDB",
)

afe_job_keyvals = Table(
    "afe_job_keyvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("afe_jobs.id", name="afe_job_keyvals_ibfk_1"), nullable=False),
    Column("key", String(90), nullable=False),
    Column("value", String(300), nullable=False),
    Index("afe_job_keyvals_job_id", "job_id"),
    Index("afe_job_keyvals_key", "key"),
    mysql_engine="InnoDB",
)

afe_host_queue_entries = Table(
    "afe_host_queue_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("afe_jobs.id", name="host_queue_entries_job_id_fk")),
    Column("host_id", Integer, ForeignKey("afe_hosts.id", name="host_queue_entries_host_id_fk")),
    Column("status", String(255)),
    Column("meta_host", Integer, ForeignKey("afe_labels.id", name="host_queue_entries_meta_host_fk")),
    Column("active", BOOL, server_default=text("0")),
    Column("complete", BOOL, server_default=text("0")),
    Column("deleted", BOOL, nullable=False),
    Column("execution_subdir", String(255), nullable=False),
    Column("atomic_group_id", Integer),
    Column("aborted", BOOL, nullable=False, server_default=text("0")),
    Column("started_on", DateTime),
    UniqueConstraint("job_id", "host_id", name="host_queue_entries_job_id_and_host_id"),
    Index("host_queue_entries_host_id", "host_id"),
    Index("host_queue_entries_meta_host", "meta_host"),
    Index("atomic_group_id", "atomic_group_id"),
    mysql_engine="InnoDB",
)

afe_special_tasks = Table(
    "afe_special_tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host_id", Integer, ForeignKey("afe_hosts.id", name="special_tasks_to_hosts_ibfk"), nullable=False),
    Column("task", String(64), nullable=False),
    Column("time_requested", DateTime, nullable=False),
    Column("is_active", BOOL, nullable=False, server_default=text("0")),
    Column("is_complete", BOOL, nullable=False, server_default=text("0")),
    Column("time_started", DateTime),
    Column(
        "queue_entry_id",
        Integer,
        ForeignKey("afe_host_queue_entries.id", name="special_tasks_to_host_queue_entries_ibfk"),
    ),
    Column("success", BOOL, nullable=False, server_default=text("0")),
    Column(
        "requested_by_id",
        Integer,
        ForeignKey("afe_users.id", name="special_tasks_requested_by_id"),
        nullable=False,
    ),
    Index("special_tasks_host_id", "host_id"),
    Index("special_tasks_host_queue_entry_id", "queue_entry_id"),
    Index("special_tasks_requested_by_id", "requested_by_id"),
    mysql_engine="InnoDB",
)

# The rdb's own table: the reply of every batch it committed, written in the same
# transaction as the batch's leases, so a redelivered batch is answered, not re-run.
rdb_batches = Table(
    "rdb_batches",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("reply", MEDIUMBLOB(), nullable=False),
    Column("created_at", DATETIME(fsp=6), nullable=False),
    Index("rdb_batches_created_at", "created_at"),
    mysql_engine="InnoDB",
)

# Every lease, release and update the rdb (or rdb-admin) performs, written in the same
# transaction as the change: "who had this host, and who changed it" in one query.
rdb_host_history = Table(
    "rdb_host_history",
    metadata,
    Column("id", BIGINT(), primary_key=True, autoincrement=True),
    Column("host_id", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("field", String(64), nullable=False),
    Column("old_value", Text),
    Column("new_value", Text),
    Column("batch_id", String(64)),
    Column("worker", String(128)),
    Column("created_at", DATETIME(fsp=6), nullable=False),
    Index("rdb_host_history_host", "host_id", "created_at"),
    Index("rdb_host_history_batch", "batch_id"),
    Index("rdb_host_history_created_at", "created_at"),
    mysql_engine="InnoDB",
)
