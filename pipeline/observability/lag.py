"""The lag exporter: how far each pipeline consumer group is behind, from outside the pipeline.

Every ``observability.lag_interval_s`` it reads, for every group in
:func:`pipeline.topics.group_reads` and every partition of the topics that group
reads, the committed offset (through a ``Consumer.committed()`` that never
subscribes, so it never joins the group; see :func:`pipeline.topics._committed`)
and the low and high watermarks (``read_committed``, as the pipeline consumes).
Lag in messages is the high watermark minus the committed offset; lag in seconds
is the age of the oldest unconsumed record, read from the timestamp of the
record at the committed offset (cached per offset, so an idle group costs nothing).

It depends on no worker: with every worker down the lag keeps growing here,
which is what the ``AuditstreamConsumerLag…`` alerts watch. When Kafka cannot be
read, the last values stay and ``auditstream_lag_exporter_last_success_timestamp_seconds``
stops moving (``AuditstreamLagExporterDown`` watches that).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not re-exported for mypy
    AdminClient,
    OffsetSpec,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.errors import AuditstreamError, TransportError
from pipeline.settings import Settings
from pipeline.topics import group_reads

log = logging.getLogger(__name__)

LAG_MESSAGES = "auditstream_consumer_lag_messages"
LAG_SECONDS = "auditstream_consumer_lag_seconds"
LAG_LABELS = ("group", "topic", "partition")
POLLS = "auditstream_lag_exporter_polls_total"
LAST_SUCCESS = "auditstream_lag_exporter_last_success_timestamp_seconds"


@dataclass(frozen=True)
class PartitionLag:
    """The lag of one group on one partition."""

    group: str
    topic: str
    partition: int
    committed: int  # negative: no commit yet
    low: int
    high: int
    messages: int
    seconds: float | None  # None: the oldest unconsumed record could not be read


def next_offset(committed: int, low: int) -> int:
    """The offset the group reads next: its commit, or the earliest without one.

    A commit below the low watermark (retention removed records) counts from the
    low watermark: those records are gone, and the consumer stops on them anyway.
    """
    return max(committed, low) if committed >= 0 else low


def lag_messages(committed: int, low: int, high: int) -> int:
    return max(high - next_offset(committed, low), 0)


def lag_seconds(messages: int, oldest_timestamp_ms: int | None, now: float) -> float | None:
    """Age of the oldest unconsumed record; 0 when nothing is waiting."""
    if messages == 0:
        return 0.0
    if oldest_timestamp_ms is None:
        return None
    return max(now - oldest_timestamp_ms / 1000, 0.0)


class LagCollector(Collector):
    """Exposes the last snapshot of :class:`PartitionLag` values as two gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: list[PartitionLag] = []

    def update(self, snapshot: list[PartitionLag]) -> None:
        with self._lock:
            self._snapshot = list(snapshot)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshot = list(self._snapshot)
        messages = GaugeMetricFamily(
            LAG_MESSAGES,
            "Records a consumer group has not yet committed: high watermark minus committed "
            "offset, per partition.",
            labels=LAG_LABELS,
        )
        seconds = GaugeMetricFamily(
            LAG_SECONDS,
            "Age of the oldest record a consumer group has not yet committed (0 when caught "
            "up), per partition.",
            labels=LAG_LABELS,
        )
        for lag in snapshot:
            labels = [lag.group, lag.topic, str(lag.partition)]
            messages.add_metric(labels, lag.messages)
            if lag.seconds is not None:
                seconds.add_metric(labels, lag.seconds)
        yield messages
        yield seconds


class LagReader:
    """Reads committed offsets, watermarks and oldest-record timestamps from Kafka."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        groups: dict[str, list[str]] | None = None,
    ) -> None:
        self._settings = settings
        self._timeout = settings.observability.lag_timeout_s
        self._clock = clock
        self._groups = groups if groups is not None else group_reads(settings)
        conf = settings.kafka.client_config()
        librdkafka_log = logging.getLogger(f"{__name__}.librdkafka")
        self._admin = AdminClient(conf, logger=librdkafka_log)
        # One consumer per group, only ever asked for its committed offsets: it never
        # subscribes, so it never joins the group or moves its offsets.
        self._committers = {
            group: Consumer(
                {**conf, "group.id": group, "enable.auto.commit": False}, logger=librdkafka_log
            )
            for group in self._groups
        }
        self._reader = Consumer(
            {
                **conf,
                "group.id": f"auditstream-lag-exporter-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "max.partition.fetch.bytes": 16384,
                "fetch.max.bytes": 1048576,
                "queued.max.messages.kbytes": 4096,
            },
            logger=librdkafka_log,
        )
        self._timestamps: dict[tuple[str, int, int], int] = {}

    def close(self) -> None:
        for consumer in (*self._committers.values(), self._reader):
            consumer.close()

    def poll(self) -> list[PartitionLag]:
        """One reading of every group's lag; raises :class:`TransportError` if Kafka fails."""
        try:
            return self._poll()
        except KafkaException as exc:
            raise TransportError(
                f"reading consumer lag from Kafka at {self._settings.kafka.bootstrap_servers} "
                f"failed: {exc}"
            ) from exc

    def _poll(self) -> list[PartitionLag]:
        counts = self._partition_counts()
        partitions = sorted(
            {(t, p) for topics in self._groups.values() for t in topics for p in range(counts[t])}
        )
        low = self._offsets(partitions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        high = self._offsets(partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        rows: list[tuple[str, str, int, int]] = []
        for group, topics in self._groups.items():
            wanted = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
            found = self._committers[group].committed(wanted, timeout=self._timeout)
            for tp in found:
                if tp.error is not None:
                    raise KafkaException(tp.error)
                rows.append((group, tp.topic, tp.partition, tp.offset))
        waiting = {
            (topic, partition, next_offset(committed, low[topic, partition]))
            for _, topic, partition, committed in rows
            if lag_messages(committed, low[topic, partition], high[topic, partition]) > 0
        }
        self._read_timestamps(waiting)
        now = self._clock()
        result = []
        for group, topic, partition, committed in rows:
            lo, hi = low[topic, partition], high[topic, partition]
            messages = lag_messages(committed, lo, hi)
            oldest = self._timestamps.get((topic, partition, next_offset(committed, lo)))
            result.append(
                PartitionLag(
                    group=group,
                    topic=topic,
                    partition=partition,
                    committed=committed,
                    low=lo,
                    high=hi,
                    messages=messages,
                    seconds=lag_seconds(messages, oldest, now),
                )
            )
        return result

    def _partition_counts(self) -> dict[str, int]:
        wanted = {t for topics in self._groups.values() for t in topics}
        metadata = self._admin.list_topics(timeout=self._timeout)
        counts = {}
        for topic in wanted:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise AuditstreamError(
                    f"topic {topic} does not exist on Kafka at "
                    f"{self._settings.kafka.bootstrap_servers}; run `auditstream topics`"
                )
            counts[topic] = len(meta.partitions)
        return counts

    def _offsets(
        self, partitions: list[tuple[str, int]], spec: OffsetSpec
    ) -> dict[tuple[str, int], int]:
        request = {TopicPartition(t, p): spec for t, p in partitions}
        futures = self._admin.list_offsets(
            request,
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=self._timeout,
        )
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def _read_timestamps(self, waiting: Iterable[tuple[str, int, int]]) -> None:
        """Fetch the timestamp of the record at each (topic, partition, offset) not cached yet."""
        wanted = set(waiting)
        self._timestamps = {k: v for k, v in self._timestamps.items() if k in wanted}
        missing = {(t, p): o for t, p, o in wanted if (t, p, o) not in self._timestamps}
        if not missing:
            return
        self._reader.assign([TopicPartition(t, p, o) for (t, p), o in missing.items()])
        deadline = time.monotonic() + self._timeout
        try:
            while missing and time.monotonic() < deadline:
                for msg in self._reader.consume(len(missing), 0.2):
                    if msg.error() is not None:
                        continue
                    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                    if topic is None or partition is None or offset is None:
                        continue
                    start = missing.get((topic, partition))
                    if start is None or offset < start:
                        continue
                    # The record at the committed offset, or the first after it when that
                    # offset holds a transaction marker or an aborted write.
                    self._timestamps[(topic, partition, start)] = msg.timestamp()[1]
                    del missing[(topic, partition)]
                    self._reader.incremental_unassign([TopicPartition(topic, partition)])
        finally:
            self._reader.unassign()
        if missing:
            log.debug("no record read in time at %s", sorted(missing.items()))


@dataclass
class LagExporter:
    """The exporter process: a reader, a collector, its own registry and a loop."""

    settings: Settings
    registry: CollectorRegistry
    collector: LagCollector
    polls: Counter
    last_success: Gauge

    @classmethod
    def create(cls, settings: Settings) -> LagExporter:
        registry = CollectorRegistry()
        collector = LagCollector()
        registry.register(collector)
        ProcessCollector(registry=registry)
        polls = Counter(
            POLLS, "Readings of consumer lag, by result (ok, error).", ["result"], registry=registry
        )
        last_success = Gauge(
            LAST_SUCCESS,
            "Unix time of the last complete reading of consumer lag.",
            registry=registry,
        )
        for result in ("ok", "error"):
            polls.labels(result=result)
        return cls(settings, registry, collector, polls, last_success)

    def poll_once(self, reader: LagReader) -> list[PartitionLag] | None:
        """One reading into the collector; None (and the old values kept) when it failed."""
        try:
            snapshot = reader.poll()
        except AuditstreamError as exc:
            self.polls.labels(result="error").inc()
            log.warning("consumer lag not read (keeping the last values): %s", exc)
            return None
        self.collector.update(snapshot)
        self.polls.labels(result="ok").inc()
        self.last_success.set(time.time())
        return snapshot

    def run(
        self, stop: threading.Event, *, on_poll: Callable[[list[PartitionLag]], None] | None = None
    ) -> None:
        """Poll until ``stop`` is set; the HTTP server is started by the caller."""
        reader = LagReader(self.settings)
        interval = self.settings.observability.lag_interval_s
        try:
            while not stop.is_set():
                started = time.monotonic()
                snapshot = self.poll_once(reader)
                if snapshot is not None and on_poll is not None:
                    on_poll(snapshot)
                stop.wait(max(interval - (time.monotonic() - started), 0.0))
        finally:
            reader.close()


def summarize(snapshot: list[PartitionLag]) -> str:
    """One line: total lag and the oldest waiting record, per group."""
    parts = []
    for group in sorted({lag.group for lag in snapshot}):
        rows = [lag for lag in snapshot if lag.group == group]
        messages = sum(lag.messages for lag in rows)
        ages = [lag.seconds for lag in rows if lag.seconds is not None]
        parts.append(f"{group}: {messages} msgs, {max(ages, default=0.0):.1f} s")
    return "lag " + "; ".join(parts)
