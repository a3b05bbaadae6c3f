"""rdb-replay: read what the scheduler asked and what the rdb answered, and ask again.

    rdb-replay show     [selection] [--json]            decoded batches with their recorded replies
    rdb-replay dry-run  [selection] --db-url URL [--json]
                        re-run the batches, in order, each seeing the effects of the ones
                        before it, inside ONE transaction that is rolled back: nothing
                        changes; prints where today's answer differs from the recorded one
    rdb-replay publish  [selection] --yes-publish [--to-queue X]
                        send the batches again to a live queue (under new batch ids, or
                        the stored replies would answer them) and show the new answers

Selection: --from/--to (UTC times), --offset N, --batch ID (correlation id), --kind K,
--limit N. Records come from the workers' record stream (QUEUE.record).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
from sqlalchemy import create_engine
from tqdm import tqdm

from rdb_client import protocol
from rdb_client.exceptions import BatchError, RDBException
from rdb_client.textable import format_table
from rdb_worker import recording
from rdb_worker.db import SchemaRevisionError, check_schema
from rdb_worker.handlers import Handlers
from rdb_worker.transport import TransportError, read_stream


@dataclass
class Entry:
    """One selected record, decoded as far as it goes; ``skip`` says why not further."""

    offset: int | None
    record: recording.Record | None
    batch: protocol.Batch | None = None
    reply: protocol.Reply | None = None
    skip: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


def _parse_time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r} (e.g. 2026-12-04T10:00:00)") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def select_entries(args: argparse.Namespace) -> Iterator[Entry]:
    names = protocol.BrokerNames(args.queue)
    start: int | str | dt.datetime = "first"
    if args.offset is not None:
        start = args.offset
    elif args.from_time is not None:
        start = args.from_time.astimezone(dt.timezone.utc).replace(tzinfo=None)
    taken = 0
    for offset, body in read_stream(args.amqp_url, names.record_stream, offset=start):
        try:
            record = recording.decode_record(body, offset)
        except ValueError as exc:
            yield Entry(offset, None, skip=f"unreadable record: {exc}")
            continue
        when = dt.datetime.fromtimestamp(record.recorded_at_s, dt.timezone.utc)
        if args.from_time is not None and when < args.from_time:
            continue
        if args.to_time is not None and when > args.to_time:
            break
        if args.batch and args.batch not in (record.batch_id, record.correlation_id):
            continue
        if args.kind and record.kind != args.kind:
            continue
        entry = Entry(offset, record)
        try:
            entry.batch = protocol.decode_batch(record.request, max_requests=10**9)
            entry.reply = protocol.decode_reply(record.reply)
        except BatchError as exc:
            entry.skip = f"{type(exc).__name__}: {exc}"
        yield entry
        taken += 1
        if args.limit and taken >= args.limit:
            break


def summarize(kind: str, results: list[Any] | None) -> list[Any]:
    """What to compare between two answers: host ids, error kinds, released ids."""
    if results is None:
        return []
    if kind in ("acquire", "get"):
        return [r["id"] if isinstance(r, dict) else None for r in results]
    if kind == "update":
        return [r.get("type") if isinstance(r, dict) else None for r in results]
    if kind == "release":
        return [list(results[0])] if results else []
    return list(results)


def _diffs(recorded: list[Any], now: list[Any]) -> list[str]:
    out = [f"#{i}: {a} -> {b}" for i, (a, b) in enumerate(zip(recorded, now)) if a != b]
    if len(recorded) != len(now):
        out.append(f"{len(recorded)} results recorded, {len(now)} now")
    return out


def dry_run(entries: list[Entry], db_url: str, release_grace_s: float | None) -> None:
    engine = create_engine(db_url, isolation_level="READ COMMITTED")
    try:
        check_schema(engine)
        handlers = Handlers(worker_name="rdb-replay (dry run)")
        if release_grace_s is not None:
            handlers.release_grace_s = release_grace_s
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                for entry in tqdm(entries, desc="dry run", unit="batch", file=sys.stderr, disable=len(entries) < 20):
                    if entry.skip or entry.batch is None or entry.reply is None:
                        continue
                    kind = entry.batch.kind
                    recorded = summarize(kind, entry.reply.results)
                    if entry.reply.error is not None:
                        entry.result = {"status": "skipped", "why": f"recorded a batch error: {entry.reply.error}"}
                        continue
                    savepoint = conn.begin_nested()
                    try:
                        now = summarize(kind, _wire(handlers.run(conn, kind, entry.batch.batch_id, entry.batch.requests)))
                        savepoint.commit()
                    except RDBException as exc:
                        savepoint.rollback()
                        entry.result = {"status": "error", "why": str(exc)}
                        continue
                    diffs = _diffs(recorded, now)
                    entry.result = {"status": "differs" if diffs else "same", "diffs": diffs,
                                    "recorded": recorded, "now": now}
            finally:
                transaction.rollback()
    finally:
        engine.dispose()


def _wire(results: list[Any]) -> list[Any]:
    """Results as they would have travelled, so both sides compare alike."""
    return msgpack.unpackb(msgpack.packb(results, use_bin_type=True, default=str), raw=False)


def publish(entries: list[Entry], amqp_url: str, queue: str, timeout_s: float) -> None:
    from rdb_client.transport import ClientTransport

    transport = ClientTransport(amqp_url, protocol.BrokerNames(queue))
    try:
        for entry in tqdm(entries, desc="publishing", unit="batch", file=sys.stderr, disable=len(entries) < 20):
            if entry.skip or entry.batch is None or entry.record is None:
                continue
            envelope = msgpack.unpackb(entry.record.request, raw=False)
            new_id = uuid.uuid4().hex
            envelope["batch_id"] = new_id
            try:
                body = transport.call(msgpack.packb(envelope, use_bin_type=True), new_id, timeout_s)
                reply = protocol.decode_reply(body)
            except RDBException as exc:
                entry.result = {"status": "error", "why": str(exc), "new_batch_id": new_id}
                continue
            recorded = summarize(entry.batch.kind, entry.reply.results if entry.reply else None)
            now = summarize(entry.batch.kind, reply.results)
            diffs = _diffs(recorded, now) if reply.error is None else [f"batch error: {reply.error}"]
            entry.result = {"status": "differs" if diffs else "same", "diffs": diffs, "new_batch_id": new_id}
    finally:
        transport.close()


def _row(entry: Entry) -> dict[str, Any]:
    rec = entry.record
    row: dict[str, Any] = {
        "offset": entry.offset,
        "recorded_at": dt.datetime.fromtimestamp(rec.recorded_at_s, dt.timezone.utc).isoformat() if rec else None,
        "batch_id": rec.batch_id if rec else None,
        "kind": rec.kind if rec else None,
        "worker": rec.worker if rec else None,
        "requests": len(entry.batch.requests) if entry.batch else None,
    }
    if entry.skip:
        row["skipped"] = entry.skip
    if entry.batch is not None:
        row["request"] = [r.to_wire() if hasattr(r, "to_wire") else str(r) for r in entry.batch.requests]
    if entry.reply is not None:
        row["reply"] = (
            {"error": entry.reply.error.to_wire()} if entry.reply.error else {"results": entry.reply.results}
        )
    row.update(entry.result)
    return row


def report(entries: list[Entry], mode: str, as_json: bool) -> None:
    if as_json:
        for entry in entries:
            print(json.dumps(_row(entry), default=str))
        return
    table = []
    for e in entries:
        rec = e.record
        if mode == "show":
            if e.reply is not None and e.reply.error is not None:
                answer = f"error {e.reply.error.to_wire()['type']}"
            elif e.batch is not None and e.reply is not None:
                answer = _answer(e.batch.kind, summarize(e.batch.kind, e.reply.results))
            else:
                answer = ""
            table.append((e.offset, _when(rec), rec.batch_id if rec else "?", rec.kind if rec else "?",
                          len(e.batch.requests) if e.batch else "-", e.skip or answer))
        else:
            status = e.skip and f"skipped: {e.skip}" or e.result.get("status", "")
            diffs = e.result.get("diffs", [])
            detail = "; ".join(diffs[:MAX_DIFFS_SHOWN]) or e.result.get("why", "")
            if len(diffs) > MAX_DIFFS_SHOWN:
                detail += f"; (+{len(diffs) - MAX_DIFFS_SHOWN} more: use --json)"
            table.append((e.offset, rec.batch_id if rec else "?", rec.kind if rec else "?", status, detail))
    headers = (("offset", "recorded at", "batch", "kind", "requests", "answer") if mode == "show"
               else ("offset", "batch", "kind", "result", "differences"))
    print(format_table(headers, table))
    if mode != "show":
        counts: dict[str, int] = {}
        for e in entries:
            key = "skipped" if e.skip else e.result.get("status", "?")
            counts[key] = counts.get(key, 0) + 1
        print("\n" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


MAX_DIFFS_SHOWN = 5


def _answer(kind: str, summary: list[Any]) -> str:
    """One cell that says what the reply meant, per kind."""
    if kind == "release":
        return f"released {summary[0] if summary else []}"
    if kind == "update":
        errors = sum(x is not None for x in summary)
        return f"{len(summary) - errors} applied, {errors} error(s)"
    return f"{sum(x is not None for x in summary)}/{len(summary)} got a host" if kind == "acquire" else \
        f"{sum(x is not None for x in summary)}/{len(summary)} found"


def _when(rec: recording.Record | None) -> str:
    if rec is None:
        return "?"
    return dt.datetime.fromtimestamp(rec.recorded_at_s, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rdb-replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("show", "dry-run", "publish"))
    p.add_argument("--amqp-url", default=os.environ.get("RDB_AMQP_URL"), help="default: $RDB_AMQP_URL")
    p.add_argument("--db-url", default=os.environ.get("RDB_DB_URL"), help="for dry-run (default: $RDB_DB_URL)")
    p.add_argument("--queue", default=protocol.DEFAULT_QUEUE, help="whose record stream to read")
    p.add_argument("--from", dest="from_time", type=_parse_time, help="first record time (UTC unless given)")
    p.add_argument("--to", dest="to_time", type=_parse_time, help="last record time")
    p.add_argument("--offset", type=int, help="start at this stream offset")
    p.add_argument("--batch", help="only this batch / correlation id")
    p.add_argument("--kind", choices=sorted(protocol.REQUEST_CLASSES), help="only batches of this kind")
    p.add_argument("--limit", type=int, default=0, help="at most this many batches")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.add_argument("--release-grace-s", type=float, default=None,
                   help="dry run: grace for release requests that did not set one (default: the worker default)")
    p.add_argument("--yes-publish", action="store_true", help="publish: really send to a live queue")
    p.add_argument("--to-queue", help="publish: target queue (default: --queue)")
    p.add_argument("--timeout-s", type=float, default=30.0)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not args.amqp_url:
        print("rdb-replay: no broker URL: pass --amqp-url or set RDB_AMQP_URL", file=sys.stderr)
        return 2
    if args.mode == "dry-run" and not args.db_url:
        print("rdb-replay: dry-run needs --db-url or RDB_DB_URL", file=sys.stderr)
        return 2
    if args.mode == "publish" and not args.yes_publish:
        print("rdb-replay: publish sends batches to a live rdb; add --yes-publish if you mean it", file=sys.stderr)
        return 2
    try:
        entries = list(tqdm(select_entries(args), desc="reading records", unit="rec", file=sys.stderr,
                            disable=not sys.stderr.isatty()))
        if args.mode == "dry-run":
            dry_run(entries, args.db_url, args.release_grace_s)
        elif args.mode == "publish":
            publish(entries, args.amqp_url, args.to_queue or args.queue, args.timeout_s)
    except SchemaRevisionError as exc:
        print(f"rdb-replay: refusing to replay: {exc}", file=sys.stderr)
        return 2
    except (TransportError, RDBException) as exc:
        print(f"rdb-replay: {exc}", file=sys.stderr)
        return 1
    try:
        report(entries, args.mode, args.json)
    except BrokenPipeError:  # `rdb-replay ... | head`: the reader has what it wanted
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
