"""The AFE tables the rdb serves, as autotest_web (migrate_info 68) has them.

Revision ID: 0001
Revises:
Create Date: 2026-12-04

Each table is created only if missing, so this revision adopts an existing autotest
database unchanged. Foreign keys that point at autotest tables the rdb never reads
(drone sets, atomic groups, parameterized jobs) are left out of fresh databases; their
columns are kept.
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen on purpose: later revisions change these tables with their own steps.
AFE_TABLES_DDL: list[tuple[str, str]] = [
    (
        "afe_users",
        """CREATE TABLE IF NOT EXISTS `afe_users` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `login` varchar(255) DEFAULT NULL,
  `access_level` int(11) DEFAULT '0',
  `reboot_before` smallint(6) NOT NULL,
  `reboot_after` smallint(6) NOT NULL,
  `show_experimental` tinyint(1) NOT NULL DEFAULT '0',
  `drone_set_id` int(11) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `afe_users_drone_set_ibfk` (`drone_set_id`)
) ENGINE=InnoDB""",
    ),
    (
        "afe_hosts",
        """CREATE TABLE IF NOT EXISTS `afe_hosts` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `hostname` varchar(255) DEFAULT NULL,
  `locked` tinyint(1) DEFAULT '0',
  `synch_id` int(11) DEFAULT NULL,
  `status` varchar(255) DEFAULT NULL,
  `invalid` tinyint(1) DEFAULT '0',
  `protection` int(11) NOT NULL,
  `locked_by_id` int(11) DEFAULT NULL,
  `lock_time` datetime DEFAULT NULL,
  `dirty` tinyint(1) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `hosts_locked_by_fk` (`locked_by_id`),
  CONSTRAINT `hosts_locked_by_fk` FOREIGN KEY (`locked_by_id`) REFERENCES `afe_users` (`id`) ON DELETE NO ACTION
) ENGINE=InnoDB""",
    ),
    (
        "afe_labels",
        """CREATE TABLE IF NOT EXISTS `afe_labels` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `name` varchar(750) DEFAULT NULL,
  `kernel_config` varchar(255) DEFAULT NULL,
  `platform` tinyint(1) DEFAULT '0',
  `invalid` tinyint(1) NOT NULL,
  `only_if_needed` tinyint(1) NOT NULL,
  `atomic_group_id` int(11) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`),
  KEY `atomic_group_id` (`atomic_group_id`)
) ENGINE=InnoDB""",
    ),
    (
        "afe_hosts_labels",
        """CREATE TABLE IF NOT EXISTS `afe_hosts_labels` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `host_id` int(11) DEFAULT NULL,
  `label_id` int(11) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `hosts_labels_both_ids` (`label_id`,`host_id`),
  KEY `hosts_labels_host_id` (`host_id`),
  CONSTRAINT `hosts_labels_host_id_fk` FOREIGN KEY (`host_id`) REFERENCES `afe_hosts` (`id`) ON DELETE NO ACTION,
  CONSTRAINT `hosts_labels_label_id_fk` FOREIGN KEY (`label_id`) REFERENCES `afe_labels` (`id`) ON DELETE NO ACTION
) ENGINE=InnoDB""",
    ),
    (
        "afe_acl_groups",
        """CREATE TABLE IF NOT EXISTS `afe_acl_groups` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `name` varchar(255) DEFAULT NULL,
  `description` varchar(255) DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB""",
    ),
    (
        "afe_acl_groups_hosts",
        """CREATE TABLE IF NOT EXISTS `afe_acl_groups_hosts` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `aclgroup_id` int(11) DEFAULT NULL,
  `host_id` int(11) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `acl_groups_hosts_both_ids` (`aclgroup_id`,`host_id`),
  KEY `acl_groups_hosts_host_id` (`host_id`),
  CONSTRAINT `acl_groups_hosts_aclgroup_id_fk` FOREIGN KEY (`aclgroup_id`) REFERENCES `afe_acl_groups` (`id`) ON DELETE NO ACTION,
  CONSTRAINT `acl_groups_hosts_host_id_fk` FOREIGN KEY (`host_id`) REFERENCES `afe_hosts` (`id`) ON DELETE NO ACTION
) ENGINE=InnoDB""",
    ),
    (
        "afe_acl_groups_users",
        """CREATE TABLE IF NOT EXISTS `afe_acl_groups_users` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `aclgroup_id` int(11) DEFAULT NULL,
  `user_id` int(11) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `acl_groups_users_both_ids` (`aclgroup_id`,`user_id`),
  KEY `acl_groups_users_user_id` (`user_id`),
  CONSTRAINT `acl_groups_users_aclgroup_id_fk` FOREIGN KEY (`aclgroup_id`) REFERENCES `afe_acl_groups` (`id`) ON DELETE NO ACTION,
  CONSTRAINT `acl_groups_users_user_id_fk` FOREIGN KEY (`user_id`) REFERENCES `afe_users` (`id`) ON DELETE NO ACTION
) ENGINE=InnoDB""",
    ),
    (
        "afe_jobs",
        """CREATE TABLE IF NOT EXISTS `afe_jobs` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `owner` varchar(255) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `priority` int(11) DEFAULT NULL,
  `control_file` text,
  `control_type` int(11) DEFAULT NULL,
  `created_on` datetime DEFAULT NULL,
  `synch_count` int(11) DEFAULT NULL,
  `timeout` int(11) NOT NULL,
  `run_verify` tinyint(1) DEFAULT '1',
  `email_list` varchar(250) NOT NULL,
  `reboot_before` smallint(6) NOT NULL,
  `reboot_after` smallint(6) NOT NULL,
  `parse_failed_repair` tinyint(1) NOT NULL DEFAULT '1',
  `max_runtime_hrs` int(11) NOT NULL,
  `drone_set_id` int(11) DEFAULT NULL,
  `parameterized_job_id` int(11) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `afe_jobs_drone_set_ibfk` (`drone_set_id`),
  KEY `afe_jobs_parameterized_job_ibfk` (`parameterized_job_id`),
  KEY `created_on` (`created_on`)
) ENGINE=InnoDB""",
    ),
    (
        "afe_jobs_dependency_labels",
        """CREATE TABLE IF NOT EXISTS `afe_jobs_dependency_labels` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `job_id` int(11) NOT NULL,
  `label_id` int(11) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `job_id` (`job_id`,`label_id`),
  KEY `jobs_dependency_labels_label_id_fk` (`label_id`),
  CONSTRAINT `jobs_dependency_labels_job_id_fk` FOREIGN KEY (`job_id`) REFERENCES `afe_jobs` (`id`) ON DELETE NO ACTION,
  CONSTRAINT `jobs_dependency_labels_label_id_fk` FOREIGN KEY (`label_id`) REFERENCES `afe_labels` (`id`) ON DELETE NO ACTION
) ENGINE=InnoDB""",
    ),
    (
        "afe_job_keyvals",
        """CREATE TABLE IF NOT EXISTS `afe_job_keyvals` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `job_id` int(11) NOT NULL,
  `key` varchar(90) NOT NULL,
  `value` varchar(300) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `afe_job_keyvals_job_id` (`job_id`),
  KEY `afe_job_keyvals_key` (`key`),
  CONSTRAINT `afe_job_keyvals_ibfk_1` FOREIGN KEY (`job_id`) REFERENCES `afe_jobs` (`id`) ON DELETE NO ACTION
) ENGINE=InnoDB""",
    ),
    (
        "afe_host_queue_entries",
        """CREATE TABLE IF NOT EXISTS `afe_host_queue_entries` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `job_id` int(11) DEFAULT NULL,
  `host_id` int(11) DEFAULT NULL,
  `status` varchar(255) DEFAULT NULL,
  `meta_host` int(11) DEFAULT NULL,
  `active` tinyint(1) DEFAULT '0',
  `complete` tinyint(1) DEFAULT '0',
  `deleted` tinyint(1) NOT NULL,
  `execution_subdir` varchar(255) NOT NULL,
  `atomic_group_id` int(11) DEFAULT NULL,
  `aborted` tinyint(1) NOT NULL DEFAULT '0',
  `started_on` datetime DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `host_queue_entries_job_id_and_host_id` (`job_id`,`host_id`),
  KEY `host_queue_entries_host_id` (`host_id`),
  KEY `host_queue_entries_meta_host` (`meta_host`),
  KEY `atomic_group_id` (`atomic_group_id`),
  CONSTRAINT `host_queue_entries_host_id_fk` FOREIGN KEY (`host_id`) REFERENCES `afe_hosts` (`id`) ON DELETE NO ACTION,
  CONSTRAINT `host_queue_entries_job_id_fk` FOREIGN KEY (`job_id`) REFERENCES `afe_jobs` (`id`) ON DELETE NO ACTION,
  CONSTRAINT `host_queue_entries_meta_host_fk` FOREIGN KEY (`meta_host`) REFERENCES `afe_labels` (`id`) ON DELETE NO ACTION
) ENGINE=InnoDB""",
    ),
    (
        "afe_special_tasks",
        """CREATE TABLE IF NOT EXISTS `afe_special_tasks` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `host_id` int(11) NOT NULL,
  `task` varchar(64) NOT NULL,
  `time_requested` datetime NOT NULL,
  `is_active` tinyint(1) NOT NULL DEFAULT '0',
  `is_complete` tinyint(1) NOT NULL DEFAULT '0',
  `time_started` datetime DEFAULT NULL,
  `queue_entry_id` int(11) DEFAULT NULL,
  `success` tinyint(1) NOT NULL DEFAULT '0',
  `requested_by_id` int(11) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `special_tasks_host_id` (`host_id`),
  KEY `special_tasks_host_queue_entry_id` (`queue_entry_id`),
  KEY `special_tasks_requested_by_id` (`requested_by_id`),
  CONSTRAINT `special_tasks_requested_by_id` FOREIGN KEY (`requested_by_id`) REFERENCES `afe_users` (`id`) ON DELETE NO ACTION,
  CONSTRAINT `special_tasks_to_hosts_ibfk` FOREIGN KEY (`host_id`) REFERENCES `afe_hosts` (`id`),
  CONSTRAINT `special_tasks_to_host_queue_entries_ibfk` FOREIGN KEY (`queue_entry_id`) REFERENCES `afe_host_queue_entries` (`id`)
) ENGINE=InnoDB""",
    ),
]


def upgrade() -> None:
    for _name, ddl in AFE_TABLES_DDL:
        op.execute(ddl)


def downgrade() -> None:
    raise RuntimeError(
        "revision 0001 adopts autotest's own tables; refusing to drop them (and every row in them)"
    )
