"""``auditstream lag-exporter`` and ``auditstream dlq list|show|redrive``."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    _register_lag_exporter(subparsers)
    _register_dlq(subparsers)


# -- lag-exporter ---------------------------------------------------------------


def _register_lag_exporter(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lag-exporter",
        help="export the consumer lag of the pipeline's groups to Prometheus",
        description="Read committed offsets and high watermarks of the worker and sink groups "
        "and serve auditstream_consumer_lag_messages and auditstream_consumer_lag_seconds on "
        "/metrics. Runs apart from the workers, so it keeps reporting when they are all down.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="serve /metrics on this port (default: observability.lag_exporter_port, 9403)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between readings (default: observability.lag_interval_s)",
    )
    parser.add_argument(
        "--once", action="store_true", help="print one reading per partition and exit"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no status line on stderr while running"
    )
    parser.set_defaults(func=run_lag_exporter)


def run_lag_exporter(args: argparse.Namespace, settings: Settings) -> int:
    from prometheus_client import start_http_server

    from pipeline.observability.lag import LagExporter, LagReader, summarize

    obs = settings.observability
    updates: dict[str, Any] = {}
    if args.port is not None:
        updates["lag_exporter_port"] = args.port
    if args.interval is not None:
        updates["lag_interval_s"] = args.interval
    if updates:
        settings = settings.model_copy(update={"observability": obs.model_copy(update=updates)})
        obs = settings.observability

    if args.once:
        reader = LagReader(settings)
        try:
            snapshot = reader.poll()
        finally:
            reader.close()
        print(
            f"{'group':<36} {'topic':<32} {'part':>4} {'committed':>10} {'high':>10} "
            f"{'lag':>8} {'age s':>8}"
        )
        for lag in snapshot:
            age = "-" if lag.seconds is None else f"{lag.seconds:.1f}"
            print(
                f"{lag.group:<36} {lag.topic:<32} {lag.partition:>4} {lag.committed:>10} "
                f"{lag.high:>10} {lag.messages:>8} {age:>8}"
            )
        return 0

    exporter = LagExporter.create(settings)
    start_http_server(obs.lag_exporter_port, addr=obs.lag_exporter_addr, registry=exporter.registry)
    print(
        f"lag exporter: /metrics on {obs.lag_exporter_addr}:{obs.lag_exporter_port}, reading "
        f"Kafka at {settings.kafka.bootstrap_servers} every {obs.lag_interval_s:g} s",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def status(snapshot: list[Any]) -> None:
        if not args.quiet:
            print(summarize(snapshot), file=sys.stderr, flush=True)

    exporter.run(stop, on_poll=status)
    return 0


# -- dlq ------------------------------------------------------------------------


def _register_dlq(subparsers: Any) -> None:
    name = "pipeline.observability.dlq"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:  # only while dlq is being built
        if exc.name != name:
            raise
        return
    module.register(subparsers)
