"""``auditstream stack up|down|status``."""

from __future__ import annotations

import argparse
import sys
import time

from pipeline.settings import Settings
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


def status(args: argparse.Namespace, settings: Settings) -> int:
    rows = LocalStack(settings).status()
    print(f"{'service':<12}{'pid':>8}{'port':>7}  {'state':<10} log")
    for row in rows:
        pid = str(row.pid) if row.pid is not None else "-"
        print(f"{row.name:<12}{pid:>8}{row.port:>7}  {row.state:<10} {row.log}")
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
    sub.add_parser(
        "status", help=f"show each service; exit 0 if all are healthy, else {EXIT_NOT_ALL_UP}"
    ).set_defaults(func=status)
