"""What the worker does with one input record, without Kafka or Faust.

``Processor.process`` takes the record as received (and the dedupe state of
its partition) and returns the outputs to write: an enriched event with the
changelog record of its first sighting, nothing for a duplicate, or a dead
letter carrying the original bytes, headers, source position and a reason
code. It never raises for a bad record; it raises only for faults of the
worker itself (a schema registry outage, a bug), which must stop the process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.codec import Decoder, Encoding, RegistryLookup, encode
from pipeline.errors import RecordError
from pipeline.schemas import ACCESS_EVENT, ALERT, DEAD_LETTER, ENRICHED_EVENT, SchemaStore
from pipeline.settings import Settings
from pipeline.stages.dedupe import Deduper, Sighting, Store, Verdict
from pipeline.stages.detect import DetectStage
from pipeline.stages.detect.alerts import AlertRecord
from pipeline.stages.detect.base import DetectorGroup, EnrichedEventView
from pipeline.stages.detect.stage import EntityCache
from pipeline.stages.enrich import EnrichStage
from pipeline.stages.validate import ValidEvent, to_micros, validate
from pipeline.telemetry import EVENTS, dead_lettered

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class InputRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def from_message(cls, msg: Any) -> InputRecord:
        """From a confluent-kafka ``Message`` (tools and tests that run the stages in-process)."""
        return cls(
            msg.topic(),
            msg.partition(),
            msg.offset(),
            msg.timestamp()[1],
            msg.key(),
            msg.value(),
            list(msg.headers() or []),
        )


@dataclass(frozen=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (changelog deletions)
    headers: Headers
    changelog: bool = False
    by_key: bool = False  # partition by key (else: the input's partition number)


@dataclass(frozen=True)
class PartitionState:
    """The tables of one input partition, and their changelog topics."""

    dedupe: Store
    dedupe_changelog: str
    users: Store | None = None
    users_changelog: str = ""


class Processor:
    """Decode, validate and wrap one record; see the module docstring."""

    def __init__(self, settings: Settings, store: SchemaStore) -> None:
        self._settings = settings
        url = settings.codec.schema_registry_url
        self._decoder = Decoder(
            store,
            store.latest(ACCESS_EVENT),
            RegistryLookup(url, settings.codec.registry_retry_s) if url else None,
        )
        self._enriched = store.latest(ENRICHED_EVENT)
        self._dead_letter = store.latest(DEAD_LETTER)
        self._skew = settings.worker.max_future_skew_s
        self._topics = settings.topics
        self._dedupe = settings.dedupe
        self._deduper = Deduper(settings.dedupe.window_s, settings.worker.max_lateness_s)
        self._enrich = EnrichStage.from_settings(settings)
        self._detect = DetectStage.from_settings(settings) if settings.detect.enabled else None
        self._alert = store.latest(ALERT)
        self._enriched_decoder = Decoder(store, self._enriched)
        self._since_sweep: dict[int, int] = {}
        # Per (table, partition): decoded detection states, and the expiry sweeps'
        # counters, cursors and event-time watermarks (the input's comes from dedupe).
        self._caches: dict[tuple[str, int], EntityCache] = {}
        self._detect_sweeps: dict[tuple[str, int], tuple[int, bytes | None]] = {}
        self._by_ip_watermarks: dict[int, int] = {}

    def rebalanced(self) -> None:
        """Forget cached detection states: Faust may write the tables while recovering."""
        self._caches.clear()

    def _cache(self, table: str, partition: int) -> EntityCache:
        cache = self._caches.get((table, partition))
        if cache is None:
            cache = self._caches[(table, partition)] = EntityCache(
                self._settings.detect.cache_entities
            )
        return cache

    def process(self, record: InputRecord, state: PartitionState | None = None) -> list[Output]:
        """The outputs for ``record``; with ``state``, deduplicated and run through detection."""
        decoded = None
        try:
            decoded = self._decoder.decode(record.value)
            valid = validate(
                decoded.record,
                record_timestamp_ms=record.timestamp_ms,
                max_future_skew_s=self._skew,
            )
        except RecordError as exc:
            event_id = decoded.record.get("event_id") if decoded else None
            return [self.dead_letter(record, exc.reason, str(exc), event_id)]
        EVENTS.labels(stage="validate", result="ok").inc()
        if state is None or not self._dedupe.enabled:
            output, _ = self._enriched_output(
                record, valid, decoded.encoding.value, decoded.writer.label
            )
            return [output]
        outputs = self._deduplicated(
            record, valid, decoded.encoding.value, decoded.writer.label, state
        )
        return outputs + self._sweep(record.partition, state.dedupe, state.dedupe_changelog)

    def _deduplicated(
        self,
        record: InputRecord,
        valid: ValidEvent,
        encoding: str,
        writer: str,
        state: PartitionState,
    ) -> list[Output]:
        event_id = valid.event["event_id"]
        sighting = Sighting(
            valid.content_hash, record.partition, record.offset, to_micros(valid.occurred_at)
        )
        decision = self._deduper.decide(state.dedupe, event_id, sighting)
        if decision.verdict is Verdict.DUPLICATE:
            EVENTS.labels(stage="dedupe", result="duplicate").inc()
            return []
        if decision.verdict is Verdict.CONFLICT:
            first = decision.first
            assert first is not None
            detail = (
                f"event_id {event_id} was first seen at {record.topic}/{first.partition}"
                f"@{first.offset} with content hash {first.content_hash}; this copy has "
                f"{valid.content_hash}"
            )
            return [self.dead_letter(record, "conflicting_duplicate", detail, event_id, "dedupe")]
        EVENTS.labels(stage="dedupe", result="ok").inc()
        first = decision.first
        assert first is not None
        output, enriched = self._enriched_output(record, valid, encoding, writer)
        # A replay re-sends the changelog record too: the local store may be ahead of it.
        sighting_record = Output(
            state.dedupe_changelog, event_id.encode(), first.encode(), [], changelog=True
        )
        return [output, sighting_record, *self._detect_user(record, enriched, output, state)]

    def _detect_user(
        self, record: InputRecord, enriched: dict[str, Any], output: Output, state: PartitionState
    ) -> list[Output]:
        """Per-user detectors here; events the per-address ones need go to the by-IP topic."""
        if self._detect is None or state.users is None:
            return []
        view = EnrichedEventView.from_enriched(enriched)
        position = (record.topic, record.partition, record.offset)
        group, cache = self._detect.users, self._cache("users", record.partition)
        outcome = self._detect.observe(group, state.users, view, position, cache)
        outputs = [self._alert_output(alert) for alert in outcome.alerts]
        if outcome.value is not None:
            outputs.append(
                Output(state.users_changelog, outcome.key, outcome.value, [], changelog=True)
            )
        if self._detect.needs_by_ip(view):
            ip = str(enriched["event"]["source"]["ip"]).encode()
            outputs.append(Output(self._topics.by_ip, ip, output.value, [], by_key=True))
        watermark = self._deduper.watermark(record.partition)
        return outputs + self._sweep_detect(
            "users", group, record.partition, state.users, state.users_changelog, watermark
        )

    def process_by_ip(self, record: InputRecord, store: Store, changelog: str) -> list[Output]:
        """A record of the by-IP topic (an enriched event keyed by source address)."""
        if self._detect is None:
            return []
        enriched = self._enriched_decoder.decode(record.value).record
        view = EnrichedEventView.from_enriched(enriched)
        # The watermark is per source partition: the position is the input record's.
        position = (
            enriched["source_topic"],
            enriched["source_partition"],
            enriched["source_offset"],
        )
        group, cache = self._detect.ips, self._cache("ips", record.partition)
        outcome = self._detect.observe(group, store, view, position, cache)
        outputs = [self._alert_output(alert) for alert in outcome.alerts]
        if outcome.value is not None:
            outputs.append(Output(changelog, outcome.key, outcome.value, [], changelog=True))
        watermark = max(self._by_ip_watermarks.get(record.partition, 0), view.occurred_us)
        self._by_ip_watermarks[record.partition] = watermark
        return outputs + self._sweep_detect(
            "ips", group, record.partition, store, changelog, watermark
        )

    def _sweep_detect(
        self,
        table: str,
        group: DetectorGroup,
        partition: int,
        store: Store,
        changelog: str,
        watermark_us: int,
    ) -> list[Output]:
        """Every ``detect.sweep_every`` events of a partition: expire its silent entities."""
        assert self._detect is not None
        count, cursor = self._detect_sweeps.get((table, partition), (0, None))
        if count + 1 < self._settings.detect.sweep_every:
            self._detect_sweeps[(table, partition)] = (count + 1, cursor)
            return []
        expired, cursor = self._detect.sweep(
            group,
            store,
            watermark_us,
            cursor,
            self._settings.detect.sweep_limit,
            self._cache(table, partition),
        )
        self._detect_sweeps[(table, partition)] = (0, cursor)
        return [Output(changelog, key, None, [], changelog=True) for key in expired]

    def _alert_output(self, alert: AlertRecord) -> Output:
        value = encode(alert.to_avro(), self._alert, Encoding.SINGLE_OBJECT)
        return Output(self._topics.alerts, alert.alert_id.encode(), value, [], by_key=True)

    def _sweep(self, partition: int, state: Store, changelog: str) -> list[Output]:
        count = self._since_sweep.get(partition, 0) + 1
        if count < self._dedupe.sweep_every:
            self._since_sweep[partition] = count
            return []
        self._since_sweep[partition] = 0
        expired = self._deduper.sweep(state, partition, self._dedupe.sweep_limit)
        return [Output(changelog, key, None, [], changelog=True) for key in expired]

    def _enriched_output(
        self, record: InputRecord, valid: ValidEvent, encoding: str, writer: str
    ) -> tuple[Output, dict[str, Any]]:
        context, errors = self._enrich.enrich(valid.event)
        enriched = {
            **context,
            "event": valid.event,
            "content_hash": valid.content_hash,
            "received_at": datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC),
            "source_topic": record.topic,
            "source_partition": record.partition,
            "source_offset": record.offset,
            "encoding": encoding,
            "writer_schema": writer,
            "enrichment_errors": errors,
        }
        value = encode(enriched, self._enriched, Encoding.SINGLE_OBJECT)
        return Output(self._topics.enriched, record.key, value, []), enriched

    def dead_letter(
        self,
        record: InputRecord,
        reason: str,
        detail: str,
        event_id: Any = None,
        stage: str = "validate",
    ) -> Output:
        dead_lettered(
            reason,
            detail,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            stage=stage,
        )
        letter = {
            "reason": reason,
            "detail": detail,
            "event_id": event_id if isinstance(event_id, str) else None,
            "source_topic": record.topic,
            "source_partition": record.partition,
            "source_offset": record.offset,
            "source_timestamp": datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC),
            "original_key": record.key,
            "original_value": record.value,
            "original_headers": [{"key": k, "value": v} for k, v in record.headers],
            "dead_lettered_at": datetime.fromtimestamp(time.time(), tz=UTC),
        }
        value = encode(letter, self._dead_letter, Encoding.SINGLE_OBJECT)
        headers: Headers = [("auditstream.reason", reason.encode())]
        return Output(self._topics.dead_letter, record.key, value, headers)
