"""rdb-admin: the operator's view of the lab and the rdb's decisions.

    rdb-admin hosts                       counts by board/pool: ready, leased, locked, invalid
    rdb-admin hosts --label a,b           every host carrying the labels, with its state and holder
    rdb-admin show HOST                   one host: state, holder, labels, acls
    rdb-admin explain --deps a,b --acls x | --job J | --hqe H
    rdb-admin history HOST | --job J      every lease, release and update, newest last
    rdb-admin lock HOST --reason TEXT     lock (with history), unlock HOST
    rdb-admin release HOST --holder BATCH release only if still held by BATCH; or --force
    rdb-admin set-status HOST STATUS      e.g. back to Ready after a job died on it

Talks to MySQL directly (no broker needed: it must work when the rdb does not). Every
change it makes is written to the history like the workers' own. Unknown host, label,
acl or job names exit with code 2 and say which.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
import uuid
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, create_engine, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from rdb_client.textable import format_table
from rdb_worker import queries
from rdb_worker.explain import explain
from schema.tables import (
    afe_acl_groups,
    afe_host_queue_entries,
    afe_hosts,
    afe_hosts_labels,
    afe_jobs,
    afe_labels,
    rdb_host_history,
)

h = afe_hosts


class Hostless(Exception):
    """The job asks for no host at all: nothing to explain (exit 0, with why)."""


class UsageError(Exception):
    """A name the database doesn't know, or a bad combination of flags: exit code 2."""


def _actor() -> queries.Actor:
    return queries.Actor(batch_id=f"admin:{uuid.uuid4().hex[:16]}",
                         worker=f"rdb-admin:{getpass.getuser()}@{socket.gethostname()}")


def resolve_host(conn: Connection, name: str) -> int:
    row = conn.execute(select(h.c.id).where(or_(h.c.hostname == name, h.c.id == (int(name) if name.isdigit() else -1)))).first()
    if row is None:
        raise UsageError(f"no host named or numbered {name!r}")
    return row[0]


def resolve_labels(conn: Connection, names: Sequence[str]) -> list[int]:
    found = dict(conn.execute(select(afe_labels.c.name, afe_labels.c.id).where(afe_labels.c.name.in_(list(names)))).all())
    missing = [n for n in names if n not in found]
    if missing:
        raise UsageError(f"unknown label(s): {', '.join(missing)}")
    return [found[n] for n in names]


def resolve_acls(conn: Connection, names: Sequence[str]) -> list[int]:
    ids: list[int] = []
    for name in names:
        row = conn.execute(select(afe_acl_groups.c.id).where(
            or_(afe_acl_groups.c.name == name, afe_acl_groups.c.id == (int(name) if name.isdigit() else -1)))).first()
        if row is None:
            raise UsageError(f"unknown ACL group {name!r}")
        ids.append(row[0])
    return ids


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


# --- commands -------------------------------------------------------------------------
def cmd_hosts(engine: Engine, args: argparse.Namespace) -> int:
    if args.label:
        return _hosts_with_labels(engine, _split(args.label))
    with engine.connect() as conn:
        rows = conn.execute(select(h.c.id, h.c.status, h.c.leased, h.c.locked, h.c.invalid)).all()
        labels: dict[int, dict[str, str]] = {}
        for host_id, name in conn.execute(
            select(afe_hosts_labels.c.host_id, afe_labels.c.name)
            .join(afe_labels, afe_labels.c.id == afe_hosts_labels.c.label_id)
            .where(or_(afe_labels.c.name.like("board:%"), afe_labels.c.name.like("pool:%")))
        ):
            kind, _, value = name.partition(":")
            labels.setdefault(host_id, {})[kind] = value
    groups: dict[tuple[str, str], Counter[str]] = {}
    for r in rows:
        key = (labels.get(r.id, {}).get("board", "-"), labels.get(r.id, {}).get("pool", "-"))
        c = groups.setdefault(key, Counter())
        c["hosts"] += 1
        c["ready"] += r.status in (None, "Ready")
        c["leased"] += bool(r.leased)
        c["locked"] += bool(r.locked)
        c["invalid"] += bool(r.invalid)
        c["free"] += (not r.leased and not r.locked and not r.invalid and r.status in (None, "Ready"))
    cols = ("hosts", "ready", "free", "leased", "locked", "invalid")
    table = [(b, p, *(groups[(b, p)][c] for c in cols)) for b, p in sorted(groups)]
    total = Counter[str]()
    for c in groups.values():
        total.update(c)
    table.append(("TOTAL", "", *(total[c] for c in cols)))
    print(format_table(("board", "pool", *cols), table))
    statuses = Counter(r.status for r in rows)
    print()
    print(format_table(("status", "hosts"), sorted(((s or "NULL"), n) for s, n in statuses.items())))
    return 0


def _hosts_with_labels(engine: Engine, names: list[str]) -> int:
    """Every host carrying all the labels, with the state that decides whether it is free."""
    with engine.connect() as conn:
        label_ids = resolve_labels(conn, names)
        query = select(h.c.id, h.c.hostname, h.c.status, h.c.locked, h.c.invalid, h.c.leased, h.c.leased_by,
                       h.c.lock_reason)
        for label_id in label_ids:
            query = query.where(h.c.id.in_(select(afe_hosts_labels.c.host_id).where(
                afe_hosts_labels.c.label_id == label_id)))
        rows = conn.execute(query.order_by(h.c.id)).all()
    print(format_table(("host", "hostname", "status", "locked", "invalid", "leased", "leased_by", "lock_reason"),
                       [(r.id, r.hostname, r.status, "yes" if r.locked else "no", "yes" if r.invalid else "no",
                         "yes" if r.leased else "no", r.leased_by, r.lock_reason) for r in rows]))
    print(f"\n{len(rows)} host(s) carry {', '.join(names)}")
    return 0


def cmd_show(engine: Engine, args: argparse.Namespace) -> int:
    with engine.connect() as conn:
        host_id = resolve_host(conn, args.host)
        info = queries.host_infos(conn, [host_id])[host_id]
        row = conn.execute(select(h.c.leased_by, h.c.leased_at).where(h.c.id == host_id)).one()
    info.update(leased_by=row.leased_by, leased_at=row.leased_at)
    info["labels"] = ", ".join(info["labels"])
    info["acls"] = ", ".join(map(str, info["acls"]))
    print(format_table(("field", "value"), sorted(info.items())))
    return 0


def _request_for(conn: Connection, engine: Engine, args: argparse.Namespace) -> tuple[list[int], list[int], int | None, str]:
    if args.job is not None or args.hqe is not None:
        from rdb_client.jobs import JobQueryManager

        if args.hqe is not None:
            hqe_id = args.hqe
        else:
            if conn.execute(select(afe_jobs.c.id).where(afe_jobs.c.id == args.job)).first() is None:
                raise UsageError(f"no job {args.job}")
            hqe_id = conn.execute(
                select(afe_host_queue_entries.c.id).where(afe_host_queue_entries.c.job_id == args.job)
                .order_by(afe_host_queue_entries.c.complete, afe_host_queue_entries.c.id)).scalar()
            if hqe_id is None:
                raise UsageError(f"job {args.job} has no host queue entries")
        try:
            with JobQueryManager(engine.url.render_as_string(hide_password=False)) as jqm:
                (request,) = jqm.acquire_requests([hqe_id])
        except Exception as exc:  # InvalidRequestError names the unknown HQE
            raise UsageError(str(exc)) from None
        if request.host_id is None and not request.deps and not request.preferred_deps:
            raise Hostless(f"HQE {hqe_id} has no host, no meta_host and no dependency labels: it is hostless "
                           "(a suite's own job) and never asks the rdb for a host; explain its children instead")
        return sorted(request.deps), sorted(request.acls), request.host_id, f"HQE {hqe_id}"
    if not args.deps and not args.acls:
        raise UsageError("give --deps and --acls, or --job, or --hqe")
    return resolve_labels(conn, _split(args.deps)), resolve_acls(conn, _split(args.acls)), None, "request"


def cmd_explain(engine: Engine, args: argparse.Namespace) -> int:
    with engine.connect() as conn:
        try:
            deps, acls, host_id, what = _request_for(conn, engine, args)
        except Hostless as exc:
            print(str(exc))
            return 0
        result = explain(conn, deps, acls, host_id)
        dep_names = dict(conn.execute(select(afe_labels.c.id, afe_labels.c.name).where(afe_labels.c.id.in_(deps))).all())
        acl_names = dict(conn.execute(
            select(afe_acl_groups.c.id, afe_acl_groups.c.name).where(afe_acl_groups.c.id.in_(acls))).all())
    print(f"{what}: deps {', '.join(f'{d} ({dep_names.get(d)})' for d in deps) or 'none'}; "
          f"acls {', '.join(f'{a} ({acl_names.get(a)})' for a in acls) or 'none'}"
          + (f"; pinned to host {host_id}" if host_id else ""))
    print(format_table(("condition (in turn)", "hosts left"), result.steps))
    if result.available:
        print(f"\navailable now: {len(result.available)} host(s), e.g. {result.available[:10]}")
    else:
        print("\nno host is available for this request right now")
    if result.leased:
        print(f"\nhosts with these labels and acls that are leased ({len(result.leased)}), and by whom:")
        print(format_table(("host", "hostname", "status", "locked", "leased_by", "leased_at", "active jobs"),
                           [(x.id, x.hostname, x.status, "yes" if x.locked else "no", x.leased_by, x.leased_at,
                             ",".join(map(str, x.active_jobs)) or "-")
                            for x in result.leased[: args.limit]]))
    return 0


def cmd_history(engine: Engine, args: argparse.Namespace) -> int:
    t = rdb_host_history
    with engine.connect() as conn:
        if args.job is not None:
            if conn.execute(select(afe_jobs.c.id).where(afe_jobs.c.id == args.job)).first() is None:
                raise UsageError(f"no job {args.job}")
            host_ids = sorted(set(conn.execute(select(afe_host_queue_entries.c.host_id).where(
                afe_host_queue_entries.c.job_id == args.job, afe_host_queue_entries.c.host_id.is_not(None))).scalars()))
            print(f"job {args.job} used host(s) {host_ids or 'none yet'}")
        elif args.host:
            host_ids = [resolve_host(conn, args.host)]
        else:
            raise UsageError("give a HOST or --job JOB")
        rows = conn.execute(
            select(t.c.created_at, t.c.host_id, t.c.action, t.c.field, t.c.old_value, t.c.new_value,
                   t.c.batch_id, t.c.worker)
            .where(t.c.host_id.in_(host_ids)).order_by(t.c.id.desc()).limit(args.limit)
        ).all()
    print(format_table(("time", "host", "action", "field", "old", "new", "batch", "worker"),
                       [tuple(r) for r in reversed(rows)]))
    return 0


def _set_lock(engine: Engine, host: str, locked: bool, reason: str | None) -> int:
    actor = _actor()

    def work(conn: Connection) -> int:
        host_id = resolve_host(conn, host)
        payload = {"locked": int(locked), "lock_reason": reason}
        if locked:
            payload["lock_time"] = conn.exec_driver_sql("SELECT NOW()").scalar()
        queries.update_hosts(conn, [host_id], payload, actor)
        return host_id

    from rdb_worker.db import run_transaction

    host_id = run_transaction(engine, work)
    print(f"host {host_id} {'locked' if locked else 'unlocked'}" + (f": {reason}" if reason else ""))
    return 0


def cmd_lock(engine: Engine, args: argparse.Namespace) -> int:
    return _set_lock(engine, args.host, True, args.reason)


def cmd_unlock(engine: Engine, args: argparse.Namespace) -> int:
    return _set_lock(engine, args.host, False, None)


def cmd_set_status(engine: Engine, args: argparse.Namespace) -> int:
    from rdb_worker.db import run_transaction

    actor = _actor()

    def work(conn: Connection) -> int:
        host_id = resolve_host(conn, args.host)
        queries.update_hosts(conn, [host_id], {"status": args.status}, actor)
        return host_id

    host_id = run_transaction(engine, work)
    print(f"host {host_id} status set to {args.status!r}")
    return 0


def cmd_release(engine: Engine, args: argparse.Namespace) -> int:
    if not args.force and not args.holder:
        raise UsageError("give --holder BATCH (as `rdb-admin show HOST` printed it) or --force")
    actor = _actor()
    with engine.begin() as conn:
        host_id = resolve_host(conn, args.host)
        current = conn.execute(select(h.c.leased, h.c.leased_by).where(h.c.id == host_id).with_for_update()).one()
        if not current.leased:
            print(f"host {host_id} is not leased", file=sys.stderr)
            return 1
        if not args.force and current.leased_by != args.holder:
            print(f"host {host_id} is now leased by {current.leased_by!r}, not {args.holder!r}: not released",
                  file=sys.stderr)
            return 1
        conn.execute(update(h).where(h.c.id == host_id).values(leased=0, leased_by=None, leased_at=None))
        queries.record_history(conn, actor, "release", [(host_id, "leased_by", current.leased_by, None)])
    print(f"host {host_id} released (was leased by {current.leased_by})")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rdb-admin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db-url", default=os.environ.get("RDB_DB_URL"), help="SQLAlchemy URL (default: $RDB_DB_URL)")
    sub = p.add_subparsers(dest="command", required=True)
    hs = sub.add_parser("hosts", help="state of the lab: counts by board and pool; or the hosts with labels")
    hs.add_argument("--label", help="comma-separated label names: list every host carrying all of them")
    s = sub.add_parser("show", help="one host")
    s.add_argument("host", help="hostname or id")
    e = sub.add_parser("explain", help="how many hosts survive each condition of a request")
    e.add_argument("--deps", help="comma-separated label names, e.g. board:eve,pool:bvt")
    e.add_argument("--acls", help="comma-separated ACL group names or ids")
    e.add_argument("--job", type=int, help="build the request from this job's HQE")
    e.add_argument("--hqe", type=int, help="build the request from this HQE")
    e.add_argument("--limit", type=int, default=50, help="leased hosts to list")
    hi = sub.add_parser("history", help="leases, releases and updates of a host or a job's hosts")
    hi.add_argument("host", nargs="?", help="hostname or id")
    hi.add_argument("--job", type=int)
    hi.add_argument("--limit", type=int, default=200)
    lk = sub.add_parser("lock", help="lock a host so the rdb never hands it out")
    lk.add_argument("host")
    lk.add_argument("--reason", required=True)
    ul = sub.add_parser("unlock", help="unlock a host")
    ul.add_argument("host")
    st = sub.add_parser("set-status", help="set a host's status (e.g. back to Ready after a stuck job)")
    st.add_argument("host")
    st.add_argument("status")
    rl = sub.add_parser("release", help="free one leased host")
    rl.add_argument("host")
    rl.add_argument("--holder", help="the batch id that holds it (from `show`): released only if unchanged")
    rl.add_argument("--force", action="store_true", help="release whoever holds it")
    return p


COMMANDS = {"hosts": cmd_hosts, "show": cmd_show, "explain": cmd_explain, "history": cmd_history,
            "lock": cmd_lock, "unlock": cmd_unlock, "release": cmd_release, "set-status": cmd_set_status}


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not args.db_url:
        print("rdb-admin: no database URL: pass --db-url or set RDB_DB_URL", file=sys.stderr)
        return 2
    engine = create_engine(args.db_url)
    try:
        return COMMANDS[args.command](engine, args)
    except UsageError as exc:
        print(f"rdb-admin: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rdb-admin ... | head`: the reader has what it wanted
        sys.stderr.close()
        return 0
    except SQLAlchemyError as exc:
        print(f"rdb-admin: database error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
