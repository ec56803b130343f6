"""``auditstream worker``: run the stream worker."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "worker",
        help="run the stream worker (decode, validate, route to enriched or dead-letter topics)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.telemetry import start_metrics_server
    from pipeline.worker.app import run_worker

    start_metrics_server(settings.worker.metrics_port)
    return run_worker(settings)
