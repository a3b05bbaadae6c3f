"""rdb-schema: bring a database (empty, or an existing autotest one) to the rdb's head."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from schema import migrate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rdb-schema", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("upgrade", "apply every missing migration (safe to re-run; adopts an autotest database)"),
        ("current", "print the database's revision and the code's head revision"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--db-url",
            default=os.environ.get("RDB_DB_URL"),
            help="SQLAlchemy URL, e.g. mysql+pymysql://user:pw@host:3306/db (default: $RDB_DB_URL)",
        )
        p.add_argument("--db-url-file", type=Path, help="read the database URL from this file (keeps it off ps)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.db_url_file is not None:
        try:
            args.db_url = args.db_url_file.read_text().strip()
        except OSError as exc:
            print(f"rdb-schema: {exc}", file=sys.stderr)
            return 2
    if not args.db_url:
        print("rdb-schema: no database URL: pass --db-url or set RDB_DB_URL", file=sys.stderr)
        return 2
    try:
        if args.command == "upgrade":
            migrate.upgrade(args.db_url)
        engine = create_engine(args.db_url)
        try:
            current = migrate.current_revision(engine)
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        print(f"rdb-schema: database error: {exc}", file=sys.stderr)
        return 1
    head = migrate.head_revision()
    print(f"database revision: {current or '(none)'}; head: {head}")
    return 0 if current == head or args.command == "current" else 1


if __name__ == "__main__":
    sys.exit(main())
