"""Avro encodings on the wire.

Two framings are read and written:

- **single-object encoding** (Avro specification): ``C3 01``, the 8-byte
  little-endian CRC-64-AVRO fingerprint of the writer schema, then the body.
  Any producer that follows the specification, in any language, is readable.
- **Confluent Schema Registry wire format**: ``00``, a 4-byte big-endian schema
  id, then the body. Ids resolve through a schema registry when a URL is set,
  otherwise through ``schemas/registry.json``.

Decoding resolves the writer's schema against the reader's (the newest known
version), so old and new producers stay readable as fields are added.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from pipeline.errors import DecodeError, TransportError
from pipeline.schemas import SchemaEntry, SchemaStore, entry_from_schema

log = logging.getLogger(__name__)

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_HEADER = 10
_CONFLUENT_HEADER = 5


class Encoding(StrEnum):
    SINGLE_OBJECT = "single_object"
    CONFLUENT = "confluent"


@dataclass(frozen=True)
class Decoded:
    record: dict[str, Any]
    encoding: Encoding
    writer: SchemaEntry


def encode(record: dict[str, Any], schema: SchemaEntry, encoding: Encoding) -> bytes:
    """Frame ``record`` written with ``schema``."""
    buf = io.BytesIO()
    if encoding is Encoding.SINGLE_OBJECT:
        buf.write(SINGLE_OBJECT_MAGIC)
        buf.write(schema.fingerprint)
    else:
        buf.write(CONFLUENT_MAGIC)
        buf.write(struct.pack(">I", schema.id))
    schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
    return buf.getvalue()


class RegistryLookup:
    """Resolves Confluent schema ids through a schema registry (confluent-kafka's client)."""

    def __init__(self, url: str, retry_s: float = 60.0, client: Any = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = client or SchemaRegistryClient.new_client({"url": url})
        self._url = url
        self._retry_s = retry_s
        self._cache: dict[int, SchemaEntry | None] = {}

    def fetch(self, schema_id: int) -> SchemaEntry | None:
        """The schema with ``schema_id``, or None if the registry has none.

        An unreachable registry is retried with backoff for ``retry_s``; then
        :class:`TransportError` stops the worker. An outage never dead-letters.
        """
        if schema_id not in self._cache:
            self._cache[schema_id] = self._fetch(schema_id)
        return self._cache[schema_id]

    def _fetch(self, schema_id: int) -> SchemaEntry | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        deadline = time.monotonic() + self._retry_s
        delay = 0.2
        while True:
            try:
                schema = self._client.get_schema(schema_id)
                break
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    return None
                problem: Exception = exc
            except Exception as exc:  # connection refused, timeouts
                problem = exc
            if time.monotonic() + delay > deadline:
                raise TransportError(
                    f"schema registry at {self._url} did not answer for schema id {schema_id} "
                    f"within {self._retry_s:.0f} s: {problem}"
                ) from problem
            log.warning("schema registry at %s: %s; retrying in %.1f s", self._url, problem, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        return entry_from_schema(
            json.loads(schema.schema_str or "null"),
            schema_id=schema_id,
            subject="registry",
            version=0,
            file=Path(f"registry:{schema_id}"),
        )


class Decoder:
    """Turns framed bytes into records of one reader schema, or raises :class:`DecodeError`."""

    def __init__(
        self,
        store: SchemaStore,
        reader: SchemaEntry,
        registry: RegistryLookup | None = None,
    ) -> None:
        self._store = store
        self._reader = reader
        self._registry = registry

    def decode(self, value: bytes | None) -> Decoded:
        if not value:
            raise DecodeError("empty message value (tombstone or null)")
        if value[:2] == SINGLE_OBJECT_MAGIC:
            if len(value) < _SINGLE_HEADER:
                raise DecodeError("single-object header is truncated")
            writer = self._store.by_fingerprint(value[2:_SINGLE_HEADER])
            if writer is None:
                raise DecodeError(
                    f"unknown schema fingerprint {value[2:_SINGLE_HEADER].hex()}",
                    reason="unknown_schema",
                )
            return self._read(value, _SINGLE_HEADER, writer, Encoding.SINGLE_OBJECT)
        if value[:1] == CONFLUENT_MAGIC:
            if len(value) < _CONFLUENT_HEADER:
                raise DecodeError("Confluent wire-format header is truncated")
            (schema_id,) = struct.unpack(">I", value[1:_CONFLUENT_HEADER])
            writer = self._lookup_id(schema_id)
            return self._read(value, _CONFLUENT_HEADER, writer, Encoding.CONFLUENT)
        raise DecodeError(
            f"unknown framing: first bytes {value[:2].hex()} are neither Avro single-object "
            "(c301) nor Confluent wire format (00)"
        )

    def _lookup_id(self, schema_id: int) -> SchemaEntry:
        # Ids belong to one registry: with a registry configured, only it is asked.
        if self._registry is not None:
            writer = self._registry.fetch(schema_id)
        else:
            writer = self._store.by_id(schema_id)
        if writer is None:
            raise DecodeError(f"unknown schema id {schema_id}", reason="unknown_schema")
        return writer

    def _read(self, value: bytes, offset: int, writer: SchemaEntry, encoding: Encoding) -> Decoded:
        if writer.name != self._reader.name:
            raise DecodeError(
                f"written with {writer.label} ({writer.name}), not a {self._reader.name}",
                reason="unknown_schema",
            )
        buf = io.BytesIO(value)
        buf.seek(offset)
        try:
            record = schemaless_reader(buf, writer.parsed, self._reader.parsed)
        except Exception as exc:  # EOFError, struct.error, UnicodeDecodeError, IndexError …
            raise DecodeError(
                f"Avro body does not decode with {writer.label}: {type(exc).__name__}: {exc}"
            ) from None
        if buf.tell() != len(value):
            raise DecodeError(
                f"{len(value) - buf.tell()} trailing bytes after the Avro body ({writer.label})"
            )
        if not isinstance(record, dict):
            raise DecodeError(f"decoded a {type(record).__name__}, not a record")
        return Decoded(record=record, encoding=encoding, writer=writer)
