"""The ``auditstream`` command line: one entry point, one subcommand per job.

Each subcommand lives beside the code it drives and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking ``(args, settings)`` and returning the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pipeline.errors import AuditstreamError, ConfigError
from pipeline.settings import load_settings

# Modules that contribute subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "pipeline.stack.commands",
    "pipeline.topics",
    "pipeline.worker.commands",
    "pipeline.sinks.commands",
    "pipeline.producer.commands",
    "pipeline.simulate",
    "pipeline.search",
    "pipeline.retention",
    "pipeline.dashboards",
    "pipeline.integrity.commands",
    "pipeline.observability.commands",
    "pipeline.bench",
    "pipeline.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditstream",
        description="Audit-log pipeline: Kafka → Faust → OpenSearch and a tamper-evident archive.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # a command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.log_level != "DEBUG":
        # Client libraries log every request at INFO; only their problems matter here.
        for noisy in ("opensearch", "urllib3", "botocore", "kafka", "aiokafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = load_settings()
        status: int = args.func(args, settings)
    except ConfigError as exc:
        print(f"auditstream: configuration error: {exc}", file=sys.stderr)
        return 2
    except AuditstreamError as exc:
        print(f"auditstream: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
