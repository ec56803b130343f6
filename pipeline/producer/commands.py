"""``auditstream produce``: send access events from JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from pipeline.codec import Encoding
from pipeline.errors import ConfigError, ValidationError
from pipeline.events import event_from_json
from pipeline.producer.sdk import AuditProducer
from pipeline.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "produce",
        help="send access events from JSON lines (stdin or a file)",
        description="Send access events, one JSON object a line, to the input topic. "
        "A bad line is reported with its line number and skipped; the exit status is 1 "
        "if any line was bad.",
    )
    parser.add_argument("file", nargs="?", default="-", help="JSON lines file (default stdin)")
    parser.add_argument("--encoding", choices=[e.value for e in Encoding], default=None)
    parser.add_argument(
        "--compression", default="lz4", choices=["none", "gzip", "snappy", "lz4", "zstd"]
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.file == "-":
        return produce_lines(sys.stdin, args, settings)
    try:
        with open(args.file, encoding="utf-8") as handle:
            return produce_lines(handle, args, settings)
    except FileNotFoundError:
        raise ConfigError(f"{args.file}: no such file") from None


def produce_lines(lines: TextIO, args: argparse.Namespace, settings: Settings) -> int:
    bad = 0
    encoding = Encoding(args.encoding) if args.encoding else None
    with AuditProducer(settings, encoding=encoding, compression=args.compression) as producer:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                producer.send(event_from_json(json.loads(line)))
            except json.JSONDecodeError as exc:
                bad += 1
                print(f"line {number}: not JSON: {exc}", file=sys.stderr)
            except ValidationError as exc:
                bad += 1
                print(f"line {number}: {exc.reason}: {exc}", file=sys.stderr)
    print(f"sent {producer.delivered} events, {bad} bad lines", file=sys.stderr)
    return 1 if bad else 0
