"""The producer SDK (see the package docstring)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from pipeline.codec import Encoding, encode
from pipeline.errors import DeliveryError, TransportError, ValidationError
from pipeline.schemas import ACCESS_EVENT, SchemaEntry, SchemaStore, default_store
from pipeline.settings import Settings
from pipeline.stages.validate import validate


@dataclass(frozen=True)
class DeliveryReport:
    event_id: str
    partition: int | None
    offset: int | None
    error: str | None


def producer_config(settings: Settings, compression: str = "lz4") -> dict[str, Any]:
    """Idempotent, acks=all, Java-compatible partitioning."""
    return {
        **settings.kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "compression.type": compression,
        "linger.ms": 5,
    }


class AuditProducer:
    """Sends access events to the input topic; see :mod:`pipeline.producer`."""

    def __init__(
        self,
        settings: Settings,
        *,
        encoding: Encoding | None = None,
        compression: str = "lz4",
        store: SchemaStore | None = None,
        topic: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self._settings = settings
        self._encoding = Encoding(encoding or settings.codec.encoding)
        self._store = store or default_store()
        self._schema = self._resolve_schema(self._store.latest(ACCESS_EVENT))
        self._topic = topic or settings.topics.input
        self._producer = Producer({**producer_config(settings, compression), **(config or {})})
        self._failures: list[DeliveryReport] = []
        self.delivered = 0

    def _resolve_schema(self, entry: SchemaEntry) -> SchemaEntry:
        url = self._settings.codec.schema_registry_url
        if self._encoding is not Encoding.CONFLUENT or not url:
            return entry
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

        client = SchemaRegistryClient.new_client({"url": url})
        try:
            schema_id = client.register_schema(
                f"{self._settings.topics.input}-value", Schema(entry.text, "AVRO")
            )
        except Exception as exc:
            raise TransportError(f"schema registry at {url}: {exc}") from exc
        return dataclasses.replace(entry, id=schema_id)

    def encode(self, event: dict[str, Any]) -> bytes:
        """Validate and encode one event; raises :class:`ValidationError` for a bad one."""
        now_ms = int(time.time() * 1000)
        validate(
            event,
            record_timestamp_ms=now_ms,
            max_future_skew_s=self._settings.worker.max_future_skew_s,
        )
        try:
            return encode(event, self._schema, self._encoding)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValidationError(f"event does not fit {self._schema.label}: {exc}") from None

    def send(
        self,
        event: dict[str, Any],
        *,
        on_delivery: Callable[[DeliveryReport], None] | None = None,
    ) -> None:
        """Queue one event; earlier delivery failures are raised here or at flush."""
        self._raise_failures()
        value = self.encode(event)
        event_id = str(event["event_id"])
        key = str(event["actor"]["id"]).encode()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            report = DeliveryReport(
                event_id=event_id,
                partition=None if err else msg.partition(),
                offset=None if err else msg.offset(),
                error=str(err) if err else None,
            )
            if err:
                self._failures.append(report)
            else:
                self.delivered += 1
            if on_delivery is not None:
                on_delivery(report)

        self.produce_raw(value, key=key, on_delivery=delivered)

    def produce_raw(
        self,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Send bytes as they are (for tools and tests); full queues wait, never drop."""
        while True:
            try:
                self._producer.produce(
                    self._topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every queued event; raise :class:`DeliveryError` if any was not delivered."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(
                f"{remaining} events still undelivered after {timeout:.0f} s; "
                f"is Kafka at {self._settings.kafka.bootstrap_servers} reachable?"
            )
        self._raise_failures()

    def _raise_failures(self) -> None:
        if self._failures:
            failed, self._failures = self._failures, []
            sample = ", ".join(f"{r.event_id}: {r.error}" for r in failed[:3])
            raise DeliveryError(f"{len(failed)} events were not delivered ({sample})")

    def close(self, timeout: float = 60.0) -> None:
        self.flush(timeout)

    def __enter__(self) -> AuditProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
