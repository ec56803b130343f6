"""``auditstream sink archive``: every record of every topic, exactly as consumed.

The raw archive is the record of truth (DESIGN, Accounting). Each batch of one
topic-partition becomes one Avro container file of ``RawRecord`` s
(``schemas/raw_record.v1.avsc``: value, key, headers, timestamp and its type,
topic, partition, offset; bytes never decoded, so malformed input is kept as
it came), under the key ``<topic>/<partition:05d>/<first offset:020d>.avro``.

- The archive is its own offset store: on assignment a partition resumes at
  the archive's head + 1 (the newest object's last offset, from its metadata),
  not at Kafka's committed offset, which is only a hint.
- Each object claims its key with a conditional create; when another writer
  got there first, its object is adopted and this sink continues after it.
- An object's offset range starts right after the previous object's end, so
  the ranges are contiguous; offsets the broker skipped inside a range
  (transaction markers, aborted records) are counted in ``skipped_offsets``.
- The same records always give the same bytes: one codec at a fixed level
  (deflate; zstandard can be chosen), a fixed block size, a sync marker derived
  from the key, metadata in a fixed order.

- Each object's SHA-256 then enters its partition's hash chain
  (:mod:`pipeline.integrity.chain`): an entry object claimed the same way. The
  chain is brought up to the newest object when a partition is opened, so a
  crash between an object and its entry is repaired by the next sink (the
  object is already locked: it can only be chained, never rewritten).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from pipeline import telemetry
from pipeline.errors import ConfigError
from pipeline.integrity.chain import ChainHead, append_entry, repair_chain
from pipeline.schemas import default_schemas_dir
from pipeline.sinks.base import TIMESTAMP_TYPES, TP, Batch, Record, Sink, SinkError
from pipeline.sinks.storage import ObjectStore

log = logging.getLogger(__name__)

RAW_RECORD_FILE = "raw_record.v1.avsc"
FORMAT = "raw_record.v1"
CODEC = "deflate"
#: the codecs an archive object may use, each at a fixed level (same records, same bytes)
CODEC_LEVELS = {"deflate": 6, "zstandard": 3}
SYNC_INTERVAL = 64 * 1024
HEADER_PROBE_BYTES = 64 * 1024
_META = "auditstream."


def check_codec(codec: str) -> None:
    """Refuse a codec this Python cannot write, before any record is consumed."""
    if codec not in CODEC_LEVELS:
        raise ConfigError(f"archive.codec {codec!r} is not one of {', '.join(CODEC_LEVELS)}")
    if codec != "zstandard":
        return
    for module in ("compression.zstd", "backports.zstd"):  # Python 3.14, then the extra
        try:
            importlib.import_module(module)
            return
        except ImportError:
            continue
    raise ConfigError(
        "archive.codec=zstandard needs the zstd extra on Python < 3.14: "
        "pip install 'auditstream[zstd]' (or set AUDITSTREAM_ARCHIVE__CODEC=deflate)"
    )


@cache
def raw_record_schema(directory: Path | None = None) -> dict[str, Any]:
    """The parsed ``RawRecord`` schema."""
    path = (directory or default_schemas_dir()) / RAW_RECORD_FILE
    parsed = fastavro.parse_schema(json.loads(path.read_text()))
    if not isinstance(parsed, dict):
        raise ValueError(f"{path}: not a record schema")
    return parsed


def partition_prefix(topic: str, partition: int) -> str:
    return f"{topic}/{partition:05d}/"


def object_key(topic: str, partition: int, first_offset: int) -> str:
    """``access-events/00003/00000000000000001234.avro``: listings come in offset order."""
    return f"{partition_prefix(topic, partition)}{first_offset:020d}.avro"


@dataclass(frozen=True)
class ObjectInfo:
    """What an archive object's header says about it."""

    key: str
    topic: str
    partition: int
    first_offset: int  # the range starts here (right after the previous object)
    last_offset: int  # the last record's offset
    count: int
    skipped_offsets: int  # offsets in the range without a record (broker-skipped)
    first_timestamp: int
    last_timestamp: int

    def metadata(self) -> dict[str, str]:
        return {
            _META + "format": FORMAT,
            _META + "topic": self.topic,
            _META + "partition": str(self.partition),
            _META + "first_offset": str(self.first_offset),
            _META + "last_offset": str(self.last_offset),
            _META + "count": str(self.count),
            _META + "skipped_offsets": str(self.skipped_offsets),
            _META + "first_timestamp": str(self.first_timestamp),
            _META + "last_timestamp": str(self.last_timestamp),
        }

    @classmethod
    def from_metadata(cls, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        try:
            return cls(
                key=key,
                topic=meta[_META + "topic"],
                partition=int(meta[_META + "partition"]),
                first_offset=int(meta[_META + "first_offset"]),
                last_offset=int(meta[_META + "last_offset"]),
                count=int(meta[_META + "count"]),
                skipped_offsets=int(meta[_META + "skipped_offsets"]),
                first_timestamp=int(meta[_META + "first_timestamp"]),
                last_timestamp=int(meta[_META + "last_timestamp"]),
            )
        except (KeyError, ValueError) as exc:
            raise SinkError(
                f"archive object {key} has no valid auditstream metadata: {exc}"
            ) from None


def to_raw(record: Record) -> dict[str, Any]:
    ts_type = record.timestamp_type
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "timestamp_type": TIMESTAMP_TYPES[ts_type] if 0 <= ts_type < 3 else TIMESTAMP_TYPES[0],
        "key": record.key,
        "value": record.value,
        "headers": [{"key": k, "value": v} for k, v in record.headers],
    }


def encode_object(
    records: Sequence[Record],
    first_offset: int,
    schema: dict[str, Any] | None = None,
    codec: str = CODEC,
) -> tuple[bytes, ObjectInfo]:
    """The container file for ``records`` of one partition, whose range starts at ``first_offset``.

    Deterministic: the same records, start and codec give the same bytes.
    """
    if not records:
        raise ValueError("an archive object holds at least one record")
    if codec not in CODEC_LEVELS:
        raise ValueError(f"archive codec {codec!r} is not one of {', '.join(CODEC_LEVELS)}")
    head = records[0]
    last = records[-1].offset
    if head.offset < first_offset or any(
        b.offset <= a.offset or b.tp != head.tp for a, b in itertools.pairwise(records)
    ):
        raise ValueError("records must be of one partition, in increasing offset order")
    key = object_key(head.topic, head.partition, first_offset)
    timestamps = [r.timestamp for r in records]
    info = ObjectInfo(
        key=key,
        topic=head.topic,
        partition=head.partition,
        first_offset=first_offset,
        last_offset=last,
        count=len(records),
        skipped_offsets=(last - first_offset + 1) - len(records),
        first_timestamp=min(timestamps),
        last_timestamp=max(timestamps),
    )
    buf = io.BytesIO()
    fastavro.writer(
        buf,
        schema or raw_record_schema(),
        (to_raw(r) for r in records),
        codec=codec,
        sync_interval=SYNC_INTERVAL,
        metadata=info.metadata(),
        sync_marker=sync_marker(key),
        codec_compression_level=CODEC_LEVELS[codec],
    )
    return buf.getvalue(), info


def sync_marker(key: str) -> bytes:
    """The container's 16-byte sync marker: derived from the key, so output is reproducible."""
    return hashlib.sha256(key.encode()).digest()[:16]


def read_info(key: str, data: bytes) -> ObjectInfo:
    """Parse the header of an archive object (the first bytes are enough)."""
    try:
        reader = fastavro.reader(io.BytesIO(data))
    except Exception as exc:  # fastavro raises several types for a bad header
        raise ValueError(f"{key}: not an Avro container file: {exc}") from exc
    return ObjectInfo.from_metadata(key, reader.metadata)


def read_records(data: bytes) -> list[dict[str, Any]]:
    """Every ``RawRecord`` of an archive object."""
    return list(fastavro.reader(io.BytesIO(data)))  # type: ignore[arg-type]


def object_info(store: ObjectStore, key: str) -> ObjectInfo:
    """The header of a stored object, reading as little of it as possible."""
    try:
        return read_info(key, store.get(key, max_bytes=HEADER_PROBE_BYTES))
    except ValueError:
        try:
            return read_info(key, store.get(key))
        except ValueError as exc:
            raise SinkError(
                f"archive object {key} in {store.location} is unreadable: {exc}"
            ) from None


def archive_head(store: ObjectStore, topic: str, partition: int) -> ObjectInfo | None:
    """The newest object of a topic-partition, or None when the archive has none."""
    keys = [k for k in store.list(partition_prefix(topic, partition)) if k.endswith(".avro")]
    if not keys:
        return None
    info = object_info(store, keys[-1])
    if info.key != object_key(info.topic, info.partition, info.first_offset) or info.topic != topic:
        raise SinkError(
            f"archive object {keys[-1]} in {store.location} says it holds "
            f"{info.topic}[{info.partition}] from offset {info.first_offset}: its key disagrees"
        )
    return info


class ArchiveSink(Sink):
    """Writes each batch as one object per topic-partition; resumes from the archive."""

    name = "archive"
    uncommitted_start = "earliest"

    def __init__(
        self, store: ObjectStore, schema: dict[str, Any] | None = None, codec: str = CODEC
    ) -> None:
        if codec not in CODEC_LEVELS:
            raise ValueError(f"archive codec {codec!r} is not one of {', '.join(CODEC_LEVELS)}")
        self.store = store
        self.schema = schema or raw_record_schema()
        self.codec = codec
        self._next: dict[TP, int] = {}  # archive head + 1 per partition, when known
        self._chain: dict[TP, ChainHead] = {}  # the chain head per partition, when known
        self._adopted: dict[TP, int] = {}  # continue here after this batch (adoptions)

    def open(self, partitions: Sequence[TP]) -> dict[TP, int]:
        starts: dict[TP, int] = {}
        for tp in partitions:
            head = repair_chain(self.store, *tp)
            if head is None:
                self._next.pop(tp, None)
                self._chain.pop(tp, None)
                log.info("archive: %s[%d] has no archive objects yet", *tp)
                continue
            self._chain[tp] = head
            starts[tp] = self._next[tp] = head.next_offset
            log.info(
                "archive: %s[%d] resumes at offset %d after %s",
                tp[0],
                tp[1],
                head.next_offset,
                head.entry.key,
            )
        return starts

    def close(self, partitions: Sequence[TP]) -> None:
        for tp in partitions:
            self._next.pop(tp, None)
            self._chain.pop(tp, None)
            self._adopted.pop(tp, None)

    def write(self, batch: Batch) -> None:
        if batch.attempts <= 1:
            self._adopted = {}
        for tp, records in batch.by_partition().items():
            pending = [r for r in records if r.ref not in batch.settled]
            if pending:
                self._write_partition(tp, pending, batch)

    def pre_commit(self, offsets: Mapping[TP, int]) -> dict[TP, int]:
        result = dict(offsets)
        result.update({tp: o for tp, o in self._adopted.items() if tp in result})
        self._adopted = {}
        return result

    def _write_partition(self, tp: TP, records: list[Record], batch: Batch) -> None:
        stage = self.stage
        while records:
            expected = self._next.get(tp)
            stale = [r for r in records if expected is not None and r.offset < expected]
            if stale:
                # Already archived (by an adopted object): settle, do not write again.
                telemetry.EVENTS.labels(stage=stage, result="duplicate").inc(len(stale))
                batch.settle(stale)
                records = records[len(stale) :]
                continue
            start = expected if expected is not None else records[0].offset
            data, info = encode_object(records, start, self.schema, self.codec)
            if self.store.put_if_absent(info.key, data):
                self._chain[tp] = append_entry(self.store, data, info, self._chain.get(tp))
                telemetry.ARCHIVE_OBJECTS.labels(topic=tp[0]).inc()
                telemetry.ARCHIVE_BYTES.labels(topic=tp[0]).inc(len(data))
                telemetry.EVENTS.labels(stage=stage, result="ok").inc(info.count)
                log.debug(
                    "archive: wrote %s (%d records, %d bytes)", info.key, info.count, len(data)
                )
                self._next[tp] = info.last_offset + 1
                batch.settle(records)
                return
            # Another writer claimed this key first: adopt its object, go on after it.
            theirs = object_info(self.store, info.key)
            log.warning(
                "archive: %s already exists (offsets %d-%d); adopting it and continuing at %d",
                info.key,
                theirs.first_offset,
                theirs.last_offset,
                theirs.last_offset + 1,
            )
            head = repair_chain(self.store, *tp)  # chains their object (and any before it)
            if head is None or head.entry.last_offset < theirs.last_offset:
                raise SinkError(f"archive object {info.key} vanished while it was adopted")
            self._chain[tp] = head
            self._next[tp] = head.next_offset
            if theirs.last_offset >= records[-1].offset:
                self._adopted[tp] = theirs.last_offset + 1
