"""The Faust worker: a thin shell around :class:`Processor`.

One event at a time on a ``noack`` stream; outputs go through the
non-blocking :class:`OutputWriter`; an input is acknowledged only when all its
outputs are delivered (so the committed offset never passes an event whose
effects are not durable); any error ends the process at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import faust

from pipeline.schemas import SchemaStore, default_store
from pipeline.settings import Settings
from pipeline.worker.output import OutputWriter, fatal
from pipeline.worker.processor import Headers, InputRecord, Output, Processor
from pipeline.worker.state import WorkerTables
from pipeline.worker.transport import broker_urls

log = logging.getLogger(__name__)

EXIT_PROCESSING_FAILED = 71


class AckGate:
    """Caps the events per partition that are in flight (processed, not yet acknowledged)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._inflight: dict[int, int] = defaultdict(int)
        self._changed = asyncio.Event()

    async def enter(self, partition: int) -> None:
        while self._inflight[partition] >= self._limit:
            self._changed.clear()
            await self._changed.wait()
        self._inflight[partition] += 1

    def leave(self, partition: int) -> None:
        self._inflight[partition] -= 1
        self._changed.set()


def _headers(raw: Any) -> Headers:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v if v is None else bytes(v)) for k, v in items]


Handler = Callable[[InputRecord], list[Output]]


async def _process(
    stream: Any, handle: Handler, writer: OutputWriter, gate: AckGate, tables: WorkerTables
) -> None:
    """One event at a time; acknowledged from the delivery report of its last output."""
    loop = asyncio.get_running_loop()
    seen = 0
    async for event in stream.noack().events():
        message = event.message
        record = InputRecord(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=round(message.timestamp * 1000),
            key=message.key,
            value=message.value,
            headers=_headers(message.headers),
        )
        try:
            outputs = handle(record)
        except Exception as exc:
            raise RuntimeError(f"{record.topic}/{record.partition}@{record.offset}: {exc}") from exc
        await gate.enter(record.partition)

        def acknowledge(event: Any = event, partition: int = record.partition) -> None:
            event.ack()
            gate.leave(partition)

        def delivered(done: Callable[[], None] = acknowledge) -> None:
            loop.call_soon_threadsafe(done)

        writer.write(outputs, record.partition, delivered, tables.delivered)
        seen += 1
        if seen % 1000 == 0:
            tables.flush_persisted()


def create_app(
    settings: Settings,
    *,
    store: SchemaStore | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> faust.App:
    """Build the worker app; nothing happens until it is started."""
    die = on_fatal or fatal
    worker = settings.worker
    app = faust.App(
        settings.groups.worker,
        broker=broker_urls(settings.kafka.bootstrap_servers),
        store="rocksdb://",
        datadir=str(worker.data_dir),
        autodiscover=False,
        web_enabled=False,
        # DESIGN, Accounting: no leader topic, and an out-of-range offset stops the worker.
        topic_disable_leader=True,
        consumer_auto_offset_reset="none",
        topic_allow_declare=False,
        broker_session_timeout=worker.session_timeout_s,
        broker_heartbeat_interval=max(worker.session_timeout_s / 10, 0.5),
        broker_commit_interval=1.0,
        stream_buffer_maxsize=4096,
    )
    processor = Processor(settings, store or default_store())
    tables = WorkerTables(app, settings)

    def rebalanced(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        processor.rebalanced()

    app.on_partitions_revoked.connect(rebalanced)
    app.on_partitions_assigned.connect(rebalanced)

    writers: list[OutputWriter] = []

    def writer() -> OutputWriter:
        if not writers:  # one producer for both agents, made on the running loop
            writers.append(OutputWriter(settings, on_fatal=die))
        return writers[0]

    async def run(stream: Any, handle: Handler) -> None:
        try:
            gate = AckGate(worker.max_unacked_per_partition)
            await _process(stream, handle, writer(), gate, tables)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # any fault of ours: stop before acknowledging more
            log.exception("processing failed")
            die(f"processing failed: {exc!r}")
            raise

    def handle_input(record: InputRecord) -> list[Output]:
        return processor.process(record, tables.state(record.partition))

    source = app.topic(settings.topics.input, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="process")
    async def process(stream: Any) -> None:
        await run(stream, handle_input)

    if tables.ips is not None:
        ips = tables.ips

        def handle_by_ip(record: InputRecord) -> list[Output]:
            return processor.process_by_ip(
                record, ips.partition(record.partition), ips.changelog_topic
            )

        by_ip = app.topic(settings.topics.by_ip, key_serializer="raw", value_serializer="raw")

        @app.agent(by_ip, name="detect_by_ip")
        async def detect_by_ip(stream: Any) -> None:
            await run(stream, handle_by_ip)

    return app


def run_worker(settings: Settings) -> int:
    """Run the worker in the foreground until stopped."""
    from faust.worker import Worker

    settings.worker.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    level = {"crit": "critical", "warn": "warning"}.get(
        settings.worker.log_level, settings.worker.log_level
    )
    Worker(app, loglevel=level).execute_from_commandline()
    return 0
