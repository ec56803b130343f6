"""``replay``: rebuild OpenSearch documents from the enriched archive (DESIGN, Accounting).

After a disaster (an index deleted, a cluster lost) the archive still holds every
enriched event as the worker emitted it. Replay reads it back and writes the
same documents the live sink wrote, through the same :class:`OpenSearchSink`:

- the **first record per** ``event_id`` (at-least-once processing may have
  repeated one; DESIGN: readers take the first), and for alerts the first per
  (``alert_id``, ``revision``);
- events whose ``occurred_at`` lies in ``[from, to]`` (the event's own time, which
  picks the index); alerts whose ``last_seen`` does;
- idempotent: events with ``op_type=create`` and ``_id`` = ``event_id`` into the
  index their ``occurred_at`` selects, so a second replay (or a replay beside a
  running sink) changes nothing, a stored document with the same content hash is
  "already indexed" and a different one is reported, never overwritten; alerts
  with external versioning;
- events older than the search retention go to ``<restore prefix>-YYYY.MM.DD``
  (alias ``audit-restore`` by default, template like the events one), never to
  the live indices, which retention would delete again.

The archive is read with :func:`~pipeline.integrity.reconcile.records_in_window`.
Its window is Kafka record time, and an enriched record is written after its
event was received, at most ``max_future_skew_s`` before ``occurred_at``; so
objects that ended before ``from - max_future_skew_s`` cannot hold an event of the
window and are skipped unread.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO

from prometheus_client import REGISTRY

from pipeline.codec import Decoder
from pipeline.errors import DecodeError, TransportError
from pipeline.integrity.chain import ChainEntry, chain_prefix
from pipeline.integrity.reconcile import default_horizon, partitions_of, records_in_window
from pipeline.schemas import ALERT, ENRICHED_EVENT, SchemaStore
from pipeline.settings import OpenSearchSettings, RetentionSettings, Settings
from pipeline.sinks.base import TIMESTAMP_TYPES, Batch, Record
from pipeline.sinks.opensearch import alerts_index, events_index
from pipeline.sinks.storage import ObjectStore

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

log = logging.getLogger(__name__)

Target = Literal["events", "restore", "alerts"]
MAX_ATTEMPTS = 8
# Restore indices are kept until retention deletes them by their own rule, not the events'.
RESTORE_RETENTION = RetentionSettings(events_days=36_500, alerts_days=36_500)


def restore_prefix(events_prefix: str) -> str:
    """``audit-events`` → ``audit-restore``; any other prefix gets ``-restore`` appended."""
    if events_prefix.endswith("events"):
        return events_prefix[: -len("events")] + "restore"
    return f"{events_prefix}-restore"


# -- planning (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One archived record to write, and where."""

    record: Record
    target: Target
    index: str
    id: str


@dataclass
class ReplayCounts:
    """What a replay read and did; ``indices`` counts documents per target index."""

    read: int = 0
    repeats: int = 0
    outside: int = 0
    undecodable: int = 0
    events: int = 0
    restored: int = 0
    alerts: int = 0
    created: int = 0
    existing: int = 0
    errors: int = 0
    indices: Counter[str] = field(default_factory=Counter)

    def summary(self, dry_run: bool = False) -> str:
        verb = "would write" if dry_run else "wrote"
        line = (
            f"{self.read:,} archived records read: {verb} {self.events:,} events to the live "
            f"indices, {self.restored:,} older than the search retention to the restore "
            f"indices, {self.alerts:,} alert revisions; skipped {self.repeats:,} repeats, "
            f"{self.outside:,} outside the window, {self.undecodable:,} undecodable"
        )
        if not dry_run:
            line += (
                f"\nOpenSearch: {self.created:,} created, {self.existing:,} already there "
                f"(same content or a newer alert revision), {self.errors:,} refused or in conflict"
            )
        return line

    def to_json(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}


def to_record(raw: dict[str, Any]) -> Record:
    """An archived ``RawRecord`` as the sink's :class:`Record`."""
    ts_type = raw.get("timestamp_type")
    return Record(
        topic=raw["topic"],
        partition=raw["partition"],
        offset=raw["offset"],
        timestamp_type=TIMESTAMP_TYPES.index(ts_type) if ts_type in TIMESTAMP_TYPES else 0,
        timestamp=raw["timestamp"],
        key=raw.get("key"),
        value=raw.get("value"),
        headers=tuple((h["key"], h["value"]) for h in raw.get("headers") or ()),
    )


def _in(when: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or when >= start) and (end is None or when <= end)


def plan(
    records: Iterable[dict[str, Any]],
    schemas: SchemaStore,
    opensearch: OpenSearchSettings,
    *,
    events_topic: str,
    restore: str,
    start: datetime | None,
    end: datetime | None,
    horizon: datetime,
    counts: ReplayCounts,
) -> Iterator[Planned]:
    """The records to write, first per id, each with its target index; counts what it skips."""
    events = Decoder(schemas, schemas.latest(ENRICHED_EVENT))
    alerts = Decoder(schemas, schemas.latest(ALERT))
    seen: set[str | tuple[str, int]] = set()
    for raw in records:
        counts.read += 1
        record = to_record(raw)
        is_event = record.topic == events_topic
        try:
            value = (events if is_event else alerts).decode(record.value).record
        except DecodeError as exc:
            counts.undecodable += 1
            log.error(
                "replay: %s[%d]@%d does not decode, skipped: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            continue
        if is_event:
            event = value["event"]
            key: str | tuple[str, int] = event["event_id"]
            when: datetime = event["occurred_at"]
        else:
            key = (value["alert_id"], int(value["revision"]))
            when = value["last_seen"]
        if key in seen:
            counts.repeats += 1
            continue
        seen.add(key)
        if not _in(when, start, end):
            counts.outside += 1
            continue
        if not is_event:
            counts.alerts += 1
            index = alerts_index(opensearch.alerts_index_prefix, value["first_seen"])
            item = Planned(record, "alerts", index, value["alert_id"])
        elif when < horizon:
            counts.restored += 1
            index = events_index(restore, when, opensearch.index_granularity)
            item = Planned(record, "restore", index, event["event_id"])
        else:
            counts.events += 1
            index = events_index(opensearch.events_index_prefix, when, opensearch.index_granularity)
            item = Planned(record, "events", index, event["event_id"])
        counts.indices[item.index] += 1
        yield item


# -- progress -----------------------------------------------------------------------------


class Progress:
    """A progress bar on a terminal, a line every few seconds elsewhere (both on stderr)."""

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream or sys.stderr
        self.clock = clock
        self.done = 0
        self.started = self._last = clock()
        self.tty = self.stream.isatty()

    def update(self, done: int, force: bool = False) -> None:
        self.done = done
        now = self.clock()
        if not force and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        self.stream.write(("\r" if self.tty else "") + self.line(now) + ("" if self.tty else "\n"))
        self.stream.flush()

    def line(self, now: float) -> str:
        rate = self.done / max(now - self.started, 1e-6)
        total = max(self.total, self.done)
        fraction = self.done / total if total else 1.0
        filled = int(fraction * 30)
        bar = "#" * filled + "." * (30 - filled)
        return (
            f"{self.label} [{bar}] {fraction:4.0%} {self.done:,}/{total:,} records, {rate:,.0f}/s"
        )

    def finish(self, done: int | None = None) -> None:
        self.update(self.done if done is None else done, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def archived_count(
    store: ObjectStore, topic: str, start: datetime | None, end: datetime | None
) -> int:
    """Records in chained objects of ``topic`` overlapping the Kafka-time window (the total)."""
    lo = start.timestamp() * 1000 if start else None
    hi = end.timestamp() * 1000 if end else None
    total = 0
    for partition in partitions_of(store, topic):
        for key in store.list(chain_prefix(topic, partition)):
            entry = ChainEntry.from_bytes(store.get(key))
            if (lo is None or entry.last_timestamp >= lo) and (
                hi is None or entry.first_timestamp <= hi
            ):
                total += entry.count
    return total


# -- writing ------------------------------------------------------------------------------


class BatchWriter(Protocol):
    """What the writer needs of a sink (an :class:`OpenSearchSink`, a fake in tests)."""

    @property
    def stage(self) -> str: ...

    def write(self, batch: Batch) -> None: ...


class Writer:
    """Writes planned records in batches through one sink per target, retrying refusals."""

    def __init__(
        self, sinks: Mapping[Target, BatchWriter], batch_size: int, retry: tuple[float, float]
    ) -> None:
        self.sinks = sinks
        self.batch_size = batch_size
        self.retry_initial_s, self.retry_max_s = retry
        self.pending: dict[Target, list[Record]] = {t: [] for t in sinks}

    def add(self, item: Planned) -> None:
        held = self.pending[item.target]
        held.append(item.record)
        if len(held) >= self.batch_size:
            self.flush(item.target)

    def flush(self, target: Target | None = None) -> None:
        for name in [target] if target else list(self.pending):
            records, self.pending[name] = self.pending[name], []
            if records:
                self._write(name, Batch(records=records))

    def _write(self, target: Target, batch: Batch) -> None:
        delay = self.retry_initial_s
        while True:
            batch.attempts += 1
            try:
                self.sinks[target].write(batch)
                return
            except TransportError as exc:
                if batch.attempts >= MAX_ATTEMPTS:
                    raise TransportError(
                        f"replay: {exc}; gave up after {batch.attempts} attempts. Replay is "
                        "idempotent: run it again once OpenSearch is healthy"
                    ) from exc
                log.warning("replay: %s; retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)


def _sink_results(stage: str) -> dict[str, float]:
    """The sink's ``auditstream_events_total`` by result, to count what a replay did."""
    return {
        result: REGISTRY.get_sample_value(
            "auditstream_events_total", {"stage": stage, "result": result}
        )
        or 0.0
        for result in ("ok", "duplicate", "error")
    }


def install_restore_template(client: OpenSearch, settings: OpenSearchSettings, prefix: str) -> None:
    """The events template for ``<prefix>-*`` read through the alias ``<prefix>`` (idempotent)."""
    from pipeline.sinks.opensearch import (
        EVENTS_TEMPLATE,
        load_template,
        put_template,
        render_template,
    )

    body = render_template(
        load_template(EVENTS_TEMPLATE),
        prefix,
        shards=settings.number_of_shards,
        replicas=settings.number_of_replicas,
    )
    body["_meta"] = {
        "description": "Access events older than the search retention, restored by "
        "`auditstream replay`; one index per day (or month) of occurred_at.",
        "managed_by": "auditstream replay",
    }
    put_template(client, settings, prefix, body, extend_existing=False)


def open_writer(
    settings: Settings, client: OpenSearch, schemas: SchemaStore, restore: str, now: datetime
) -> Writer:
    """Templates installed; one sink for the live indices and alerts, one for restores."""
    from pipeline.sinks.opensearch import OpenSearchSink, install_templates, wait_for_opensearch

    wait_for_opensearch(client, settings.opensearch.url, settings.opensearch.wait_s)
    install_templates(client, settings.opensearch)
    install_restore_template(client, settings.opensearch, restore)

    def sink(opensearch: OpenSearchSettings, retention: RetentionSettings) -> OpenSearchSink:
        return OpenSearchSink(
            client,
            opensearch,
            retention,
            schemas,
            events_topic=settings.topics.enriched,
            alerts_topic=settings.topics.alerts,
            now=lambda: now,
        )

    live = sink(settings.opensearch, settings.retention)
    restorer = sink(
        settings.opensearch.model_copy(update={"events_index_prefix": restore}), RESTORE_RETENTION
    )
    return Writer(
        {"events": live, "restore": restorer, "alerts": live},
        settings.sink.batch_max_records,
        (settings.sink.retry_initial_s, settings.sink.retry_max_s),
    )


def replay(
    settings: Settings,
    start: datetime | None,
    end: datetime | None,
    *,
    dry_run: bool = False,
    restore: str | None = None,
    now: datetime | None = None,
    progress: TextIO | None = None,
) -> ReplayCounts:
    """Rebuild the documents of ``[start, end]`` (event time) from the archive."""
    from pipeline.sinks.opensearch import make_client
    from pipeline.sinks.storage import open_store

    now = now or datetime.now(UTC)
    restore = restore or restore_prefix(settings.opensearch.events_index_prefix)
    store = open_store(settings.archive)
    schemas = SchemaStore.load(settings.codec.schemas_dir)
    topics = settings.topics
    read_from = start - timedelta(seconds=settings.worker.max_future_skew_s) if start else None
    sources = (topics.enriched, topics.alerts)
    counts = ReplayCounts()
    planned = plan(
        (r for topic in sources for r in records_in_window(store, topic, read_from, None)),
        schemas,
        settings.opensearch,
        events_topic=topics.enriched,
        restore=restore,
        start=start,
        end=end,
        horizon=default_horizon(settings.retention.events_days, now),
        counts=counts,
    )
    total = sum(archived_count(store, topic, read_from, None) for topic in sources)
    bar = Progress(total, "replay", progress)
    if dry_run:
        for _ in planned:
            bar.update(counts.read)
        bar.finish(counts.read)
        return counts
    client = make_client(settings.opensearch)
    writer = open_writer(settings, client, schemas, restore, now)
    stage = writer.sinks["events"].stage
    before = _sink_results(stage)
    for item in planned:
        writer.add(item)
        bar.update(counts.read)
    writer.flush()
    bar.finish(counts.read)
    after = _sink_results(stage)
    counts.created = int(after["ok"] - before["ok"])
    counts.existing = int(after["duplicate"] - before["duplicate"])
    counts.errors = int(after["error"] - before["error"])
    prefixes = (
        settings.opensearch.events_index_prefix,
        restore,
        settings.opensearch.alerts_index_prefix,
    )
    client.indices.refresh(index=",".join(f"{p}-*" for p in prefixes))
    return counts
