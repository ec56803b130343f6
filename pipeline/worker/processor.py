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
from pipeline.schemas import ACCESS_EVENT, DEAD_LETTER, ENRICHED_EVENT, SchemaStore
from pipeline.settings import Settings
from pipeline.stages.dedupe import Deduper, Sighting, Store, Verdict
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


@dataclass(frozen=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (changelog deletions)
    headers: Headers
    changelog: bool = False


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
        self._since_sweep: dict[int, int] = {}

    def process(
        self, record: InputRecord, state: Store | None = None, changelog: str = ""
    ) -> list[Output]:
        """The outputs for ``record``; with ``state``, deduplicated against its partition."""
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
            return [
                self._enriched_output(record, valid, decoded.encoding.value, decoded.writer.label)
            ]
        outputs = self._deduplicated(
            record, valid, decoded.encoding.value, decoded.writer.label, state, changelog
        )
        return outputs + self._sweep(record.partition, state, changelog)

    def _deduplicated(
        self,
        record: InputRecord,
        valid: ValidEvent,
        encoding: str,
        writer: str,
        state: Store,
        changelog: str,
    ) -> list[Output]:
        event_id = valid.event["event_id"]
        sighting = Sighting(
            valid.content_hash, record.partition, record.offset, to_micros(valid.occurred_at)
        )
        decision = self._deduper.decide(state, event_id, sighting)
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
        # A replay re-sends the changelog record too: the local store may be ahead of it.
        return [
            self._enriched_output(record, valid, encoding, writer),
            Output(changelog, event_id.encode(), first.encode(), [], changelog=True),
        ]

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
    ) -> Output:
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
        return Output(self._topics.enriched, record.key, value, [])

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
