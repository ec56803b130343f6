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
import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from pipeline.errors import DecodeError, TransportError
from pipeline.schemas import SchemaEntry, SchemaStore, entry_from_schema

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

    def __init__(self, url: str) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url})
        self._url = url

    def fetch(self, schema_id: int) -> SchemaEntry | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise TransportError(f"schema registry at {self._url}: {exc}") from exc
        except Exception as exc:  # connection refused, timeouts: retried, never dead-lettered
            raise TransportError(f"schema registry at {self._url}: {exc}") from exc
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
        writer = self._store.by_id(schema_id)
        if writer is None and self._registry is not None:
            writer = self._registry.fetch(schema_id)
            if writer is not None:
                self._store.add(writer)
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
