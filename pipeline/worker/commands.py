"""``auditstream worker``: run the stream worker."""

from __future__ import annotations

import argparse
import os
from typing import Any

from pipeline.settings import Settings

METRICS_OFF_ENV = "AUDITSTREAM_METRICS_OFF"  # "1": metrics updates are no-ops (benchmark only)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "worker",
        help="run the stream worker (decode, validate, route to enriched or dead-letter topics)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no status line on stderr (else one every worker.status_interval_s seconds: "
        "rate, dead letters, lag)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.observability.status import start_status_thread
    from pipeline.telemetry import start_metrics_server
    from pipeline.worker.app import run_worker

    start_metrics_server(settings.worker.metrics_port)
    if not getattr(args, "quiet", False) and settings.worker.status_interval_s > 0:
        start_status_thread(settings, settings.worker.status_interval_s)
    if os.environ.get(METRICS_OFF_ENV) == "1":
        # Only for `python -m pipeline.observability.overhead --live`: the same worker
        # with every prometheus-client update a no-op, to measure what collection costs.
        from pipeline.observability.overhead import metrics_disabled

        with metrics_disabled():
            return run_worker(settings)
    return run_worker(settings)
