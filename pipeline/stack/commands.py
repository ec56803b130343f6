"""``auditstream stack up|down|status``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from pipeline.settings import Settings
from pipeline.stack.base import ServiceStatus
from pipeline.stack.manager import LocalStack

EXIT_NOT_ALL_UP = 3


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def up(args: argparse.Namespace, settings: Settings) -> int:
    started = time.monotonic()
    stack = LocalStack(settings, progress=_say)
    launched = stack.up(topics=not args.no_topics)
    took = time.monotonic() - started
    what = f"started {', '.join(launched)}" if launched else "already up, nothing started"
    _say(f"stack up in {took:.1f} s: {what}")
    for line in stack.where():
        _say(line)
    return 0


def down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = LocalStack(settings, progress=_say).down()
    _say(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


STATUS_COLUMNS = ("service", "state", "pid", "version", "address", "data", "log")


def status_table(rows: Sequence[ServiceStatus]) -> str:
    """``stack status`` for people: one aligned line per service (the log path last)."""
    table = [list(STATUS_COLUMNS)]
    for row in rows:
        table.append(
            [
                row.name,
                row.state,
                str(row.pid) if row.pid is not None else "-",
                row.shown_version,
                row.address or f"port {row.port}",
                str(row.data_dir) if row.data_dir is not None else "-",
                str(row.log),
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(STATUS_COLUMNS) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]])
        for line in table
    )


def status_document(rows: Sequence[ServiceStatus]) -> dict[str, Any]:
    """``stack status --json``: every field, paths as strings, unknowns as null."""
    return {
        "healthy": all(row.healthy for row in rows),
        "services": [
            {
                "name": row.name,
                "state": row.state,
                "healthy": row.healthy,
                "pid": row.pid,
                "version": row.version,
                "configured_version": row.configured_version or None,
                "address": row.address or None,
                "port": row.port,
                "data_dir": str(row.data_dir) if row.data_dir is not None else None,
                "log": str(row.log),
            }
            for row in rows
        ],
    }


def status(args: argparse.Namespace, settings: Settings) -> int:
    rows = LocalStack(settings).status()
    if getattr(args, "json", False):
        print(json.dumps(status_document(rows), indent=2))
    else:
        print(status_table(rows))
    return 0 if all(row.healthy for row in rows) else EXIT_NOT_ALL_UP


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "stack", help="run Kafka, OpenSearch and an S3 store locally (no Docker)"
    )
    sub = parser.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    up_parser = sub.add_parser(
        "up", help="fetch (once), start and wait for every service, then create the topics"
    )
    up_parser.add_argument(
        "--no-topics", action="store_true", help="do not run the `topics` setup afterwards"
    )
    up_parser.set_defaults(func=up)
    sub.add_parser("down", help="stop every service (SIGTERM, then SIGKILL)").set_defaults(
        func=down
    )
    status_parser = sub.add_parser(
        "status",
        help="show each service's health, version, address and data directory; "
        f"exit 0 if all are healthy, else {EXIT_NOT_ALL_UP}",
    )
    status_parser.add_argument("--json", action="store_true", help="print one JSON document")
    status_parser.set_defaults(func=status)
