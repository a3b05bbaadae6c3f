"""Small, explicit labs for integration tests: each test says exactly what its hosts are."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from schema.tables import (
    afe_acl_groups,
    afe_acl_groups_hosts,
    afe_acl_groups_users,
    afe_host_queue_entries,
    afe_hosts,
    afe_hosts_labels,
    afe_jobs,
    afe_labels,
    afe_special_tasks,
    afe_users,
)


@dataclass
class Lab:
    engine: Engine
    labels: dict[str, int] = field(default_factory=dict)
    acls: dict[str, int] = field(default_factory=dict)
    user_id: int | None = None

    def label(self, name: str, *, platform: bool = False) -> int:
        if name not in self.labels:
            with self.engine.begin() as conn:
                self.labels[name] = conn.execute(
                    afe_labels.insert().values(name=name, platform=platform, invalid=0, only_if_needed=0)
                ).inserted_primary_key[0]
        return self.labels[name]

    def acl(self, name: str) -> int:
        if name not in self.acls:
            with self.engine.begin() as conn:
                self.acls[name] = conn.execute(afe_acl_groups.insert().values(name=name)).inserted_primary_key[0]
        return self.acls[name]

    def user(self, login: str = "sched", acls: tuple[str, ...] = ()) -> int:
        with self.engine.begin() as conn:
            user_id = conn.execute(
                afe_users.insert().values(login=login, reboot_before=0, reboot_after=0)
            ).inserted_primary_key[0]
            for name in acls:
                conn.execute(afe_acl_groups_users.insert().values(aclgroup_id=self.acl(name), user_id=user_id))
        self.user_id = user_id
        return user_id

    def host(
        self,
        hostname: str,
        labels: tuple[str, ...] = (),
        acls: tuple[str, ...] = (),
        *,
        status: str | None = "Ready",
        leased: bool = False,
        locked: bool = False,
        invalid: bool = False,
        leased_at: dt.datetime | None = None,
        platform: str | None = None,
    ) -> int:
        label_ids = [self.label(n) for n in labels]
        if platform:
            label_ids.append(self.label(platform, platform=True))
        acl_ids = [self.acl(n) for n in acls]
        with self.engine.begin() as conn:
            host_id = conn.execute(
                afe_hosts.insert().values(
                    hostname=hostname, status=status, leased=leased, locked=locked, invalid=invalid,
                    protection=0, dirty=0, leased_at=leased_at,
                )
            ).inserted_primary_key[0]
            for label_id in label_ids:
                conn.execute(afe_hosts_labels.insert().values(host_id=host_id, label_id=label_id))
            for acl_id in acl_ids:
                conn.execute(afe_acl_groups_hosts.insert().values(host_id=host_id, aclgroup_id=acl_id))
        return host_id

    def job(self, owner: str = "sched", priority: int | None = 0, parent_job_id: int | None = None) -> int:
        with self.engine.begin() as conn:
            return conn.execute(
                afe_jobs.insert().values(
                    owner=owner, name="job", priority=priority, timeout=24, email_list="",
                    reboot_before=0, reboot_after=0, max_runtime_hrs=24, parent_job_id=parent_job_id,
                )
            ).inserted_primary_key[0]

    def hqe(self, job_id: int, host_id: int | None = None, *, active: bool = False, complete: bool = False,
            meta_host: int | None = None) -> int:
        with self.engine.begin() as conn:
            return conn.execute(
                afe_host_queue_entries.insert().values(
                    job_id=job_id, host_id=host_id, status="Queued", active=active, complete=complete,
                    deleted=0, execution_subdir="", meta_host=meta_host,
                )
            ).inserted_primary_key[0]

    def special_task(self, host_id: int, *, complete: bool = False) -> int:
        if self.user_id is None:
            self.user()
        with self.engine.begin() as conn:
            return conn.execute(
                afe_special_tasks.insert().values(
                    host_id=host_id, task="Verify", time_requested=dt.datetime(2026, 1, 1),
                    is_complete=complete, requested_by_id=self.user_id,
                )
            ).inserted_primary_key[0]

    def row(self, host_id: int) -> dict:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(afe_hosts).where(afe_hosts.c.id == host_id)).mappings().one())

    def leased_ids(self) -> set[int]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(afe_hosts.c.id).where(afe_hosts.c.leased == 1)).scalars())
