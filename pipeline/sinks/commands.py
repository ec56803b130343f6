"""``auditstream sink opensearch|archive``: run one sink until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from pipeline.errors import TransportError
from pipeline.settings import Settings
from pipeline.sinks.base import SinkLoopConfig, SinkRunner
from pipeline.telemetry import start_metrics_server

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    sink = subparsers.add_parser(
        "sink",
        help="run a sink: Kafka topics → OpenSearch or the archive",
        description="Run one sink in its own consumer group until SIGTERM or Ctrl-C.",
    )
    which = sink.add_subparsers(dest="sink", metavar="SINK", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--instance-id",
        help="static group membership id (group.instance.id; default: sink.instance_id): a "
        "restart within the session timeout keeps the partitions without a rebalance",
    )
    common.add_argument(
        "--session-timeout-ms",
        type=int,
        default=None,
        help="consumer session timeout (default: sink.session_timeout_ms, 10000)",
    )
    common.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics here (default: sink.metrics_port)",
    )

    os_parser = which.add_parser(
        "opensearch",
        parents=[common],
        help="index enriched events and alerts into OpenSearch",
        description="Consume the enriched and alert topics and bulk-index ECS documents.",
    )
    os_parser.add_argument(
        "--wait-s",
        type=float,
        default=None,
        help="how long to wait for OpenSearch to answer at start (default: opensearch.wait_s)",
    )
    os_parser.set_defaults(func=run_opensearch)

    archive = which.add_parser(
        "archive",
        parents=[common],
        help="archive every record of every topic as Avro container files",
        description="Consume the input, enriched, dead-letter and alert topics and write "
        "immutable archive objects (filesystem or S3).",
    )
    archive.set_defaults(func=run_archive)


def loop_config(
    settings: Settings,
    *,
    group_id: str,
    topics: list[str],
    max_records: int,
    max_ms: int,
    args: argparse.Namespace | None = None,
) -> SinkLoopConfig:
    return SinkLoopConfig(
        group_id=group_id,
        topics=topics,
        batch_max_records=max_records,
        batch_max_ms=max_ms,
        retry_initial_s=settings.sink.retry_initial_s,
        retry_max_s=settings.sink.retry_max_s,
        session_timeout_ms=getattr(args, "session_timeout_ms", None)
        or settings.sink.session_timeout_ms,
        instance_id=getattr(args, "instance_id", None) or settings.sink.instance_id,
    )


def opensearch_runner(settings: Settings, args: argparse.Namespace | None = None) -> SinkRunner:
    """The OpenSearch sink, ready to run (OpenSearch answered, templates installed)."""
    from pipeline.schemas import SchemaStore
    from pipeline.sinks.opensearch import (
        OpenSearchSink,
        install_templates,
        make_client,
        wait_for_opensearch,
    )

    client = make_client(settings.opensearch)
    wait_s = getattr(args, "wait_s", None) or settings.opensearch.wait_s
    deadline = time.monotonic() + wait_s
    wait_for_opensearch(client, settings.opensearch.url, wait_s)
    while True:
        try:
            installed = install_templates(client, settings.opensearch)
            break
        except TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    log.info("opensearch: index templates %s installed", ", ".join(installed))
    store = SchemaStore.load(settings.codec.schemas_dir)
    sink = OpenSearchSink(
        client,
        settings.opensearch,
        settings.retention,
        store,
        events_topic=settings.topics.enriched,
        alerts_topic=settings.topics.alerts,
    )
    loop = loop_config(
        settings,
        group_id=settings.groups.sink_opensearch,
        topics=[settings.topics.enriched, settings.topics.alerts],
        max_records=settings.sink.batch_max_records,
        max_ms=settings.sink.batch_max_ms,
        args=args,
    )
    return SinkRunner(sink, loop, settings.kafka.client_config())


def archive_runner(settings: Settings, args: argparse.Namespace | None = None) -> SinkRunner:
    """The archive sink, ready to run."""
    from pipeline.sinks.archive import ArchiveSink, check_codec, raw_record_schema
    from pipeline.sinks.storage import open_store

    check_codec(settings.archive.codec)
    store = open_store(settings.archive)
    sink = ArchiveSink(
        store, raw_record_schema(settings.codec.schemas_dir), codec=settings.archive.codec
    )
    topics = settings.topics
    loop = loop_config(
        settings,
        group_id=settings.groups.sink_archive,
        topics=[topics.input, topics.enriched, topics.dead_letter, topics.alerts],
        max_records=settings.sink.archive_max_records,
        max_ms=settings.sink.archive_max_ms,
        args=args,
    )
    log.info("archive: writing to %s", store.location)
    return SinkRunner(sink, loop, settings.kafka.client_config())


def run_opensearch(args: argparse.Namespace, settings: Settings) -> int:
    return _run(opensearch_runner(settings, args), args, settings)


def run_archive(args: argparse.Namespace, settings: Settings) -> int:
    return _run(archive_runner(settings, args), args, settings)


def _run(runner: SinkRunner, args: argparse.Namespace, settings: Settings) -> int:
    port = args.metrics_port if args.metrics_port is not None else settings.sink.metrics_port
    start_metrics_server(port)
    if port is not None:
        log.info("%s: metrics on :%d/metrics", runner.sink.name, port)
    previous = _on_signals(lambda: runner.stop())
    try:
        return runner.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _on_signals(stop: Callable[[], None]) -> dict[int, Any]:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info(
            "received %s: finishing the current write, then stopping", signal.Signals(signum).name
        )
        stop()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)
    return previous
