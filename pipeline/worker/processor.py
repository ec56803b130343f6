"""What the worker does with one input record, without Kafka or Faust.

``Processor.process`` takes the record as received and returns the outputs to
write: an enriched event, or a dead letter carrying the original bytes,
headers, source position and a reason code. It never raises for a bad record;
it raises only for faults of the worker itself (a schema registry outage, a
bug), which must stop the process.
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
from pipeline.stages.validate import validate
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
    value: bytes
    headers: Headers


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

    def process(self, record: InputRecord) -> list[Output]:
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
        enriched = {
            "event": valid.event,
            "content_hash": valid.content_hash,
            "received_at": datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC),
            "source_topic": record.topic,
            "source_partition": record.partition,
            "source_offset": record.offset,
            "encoding": decoded.encoding.value,
            "writer_schema": decoded.writer.label,
            "enrichment_errors": [],
        }
        value = encode(enriched, self._enriched, Encoding.SINGLE_OBJECT)
        return [Output(self._topics.enriched, record.key, value, [])]

    def dead_letter(
        self, record: InputRecord, reason: str, detail: str, event_id: Any = None
    ) -> Output:
        dead_lettered(
            reason, detail, topic=record.topic, partition=record.partition, offset=record.offset
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
