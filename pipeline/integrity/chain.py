"""The per-partition hash chain over archive objects (DESIGN, Integrity).

Each archive object gets one chain entry, an immutable JSON object claimed by
conditional create under ``_chain/<topic>/<partition:05d>/<first offset:020d>.json``
(the same first offset as its object, so a listing is in chain order)::

    {"count": 500, "first_offset": 1000, "first_timestamp": 1700000000000,
     "horizon": null, "key": "access-events/00003/00000000000000001000.avro",
     "last_offset": 1499, "last_timestamp": 1700000004000, "partition": 3,
     "prev": "<SHA-256 of the previous entry's bytes, or null>",
     "sha256": "<SHA-256 of the object>", "size": 81234, "skipped_offsets": 0,
     "topic": "access-events", "version": 1}

Entries are canonical JSON (sorted keys, no spaces), a pure function of the
object's bytes and the previous entry: two sinks that race on a partition
write identical entries, so whichever claims the key first, the chain is the
same. The first entry of a chain starts at offset 0, or records the offset at
which archiving began (``horizon``: Kafka had already deleted what came before).
Archive retention later removes the oldest entries (and their objects) only as
a contiguous prefix, after recording where the chain then starts as a retention
horizon (:mod:`pipeline.integrity.horizon`); the newest entry always stays.

Timestamps are the Kafka record timestamps (ms): the raw archive holds bytes
whose event time is not known without decoding them.

A crash between writing an object and its entry is repaired by
:func:`repair_chain` when the partition is next opened: the object exists (and
is locked), so its entry is written then.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pipeline.sinks.base import SinkError
from pipeline.sinks.storage import ObjectStore

if TYPE_CHECKING:
    from pipeline.sinks.archive import ObjectInfo

log = logging.getLogger(__name__)

CHAIN_PREFIX = "_chain/"
ENTRY_VERSION = 1
#: top-level prefixes that hold integrity metadata, not archived topics
RESERVED_PREFIXES = ("_chain/", "_digest/", "_horizon/")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def newest_per_partition(store: ObjectStore, prefix: str) -> list[str]:
    """Under ``prefix`` (``<prefix><topic>/<partition>/<offset>.json``), the newest key of
    each topic-partition, in (topic, partition) order."""
    newest: dict[tuple[str, str], str] = {}
    for key in store.list(prefix):
        parts = key[len(prefix) :].split("/")
        if len(parts) == 3 and parts[2].endswith(".json"):
            newest[(parts[0], parts[1])] = key  # listing is in key order: the last wins
    return [key for _, key in sorted(newest.items())]


def chain_prefix(topic: str, partition: int) -> str:
    return f"{CHAIN_PREFIX}{topic}/{partition:05d}/"


def entry_key(topic: str, partition: int, first_offset: int) -> str:
    """``_chain/access-events/00003/00000000000000001234.json``."""
    return f"{chain_prefix(topic, partition)}{first_offset:020d}.json"


@dataclass(frozen=True)
class ChainEntry:
    """One link of a partition's chain: an archive object and the hash of the link before."""

    topic: str
    partition: int
    key: str  # the archive object's key
    sha256: str  # of the object's bytes
    size: int
    first_offset: int
    last_offset: int
    count: int
    skipped_offsets: int
    first_timestamp: int
    last_timestamp: int
    prev: str | None  # SHA-256 of the previous entry's bytes; None for the first entry
    horizon: int | None = None  # first entry only: archiving began here, not at offset 0
    version: int = ENTRY_VERSION

    @property
    def entry_key(self) -> str:
        return entry_key(self.topic, self.partition, self.first_offset)

    def to_bytes(self) -> bytes:
        return canonical_json(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> ChainEntry:
        """Parse an entry; ValueError names what is wrong."""
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        try:
            entry = cls(**raw)
        except TypeError as exc:
            raise ValueError(f"not a chain entry: {exc}") from None
        ints = (
            entry.partition,
            entry.size,
            entry.first_offset,
            entry.last_offset,
            entry.count,
            entry.skipped_offsets,
            entry.first_timestamp,
            entry.last_timestamp,
        )
        if not all(isinstance(v, int) for v in ints) or entry.version != ENTRY_VERSION:
            raise ValueError("not a version-1 chain entry")
        return entry


@dataclass(frozen=True)
class ChainHead:
    """The newest entry of a partition's chain and the hash of its bytes."""

    entry: ChainEntry
    hash: str

    @property
    def next_offset(self) -> int:
        return self.entry.last_offset + 1


def make_entry(data: bytes, info: ObjectInfo, head: ChainHead | None) -> ChainEntry:
    """The entry for an archive object (``info``: its :class:`ObjectInfo`) after ``head``."""
    if head is not None and info.first_offset != head.next_offset:
        raise SinkError(
            f"archive object {info.key} starts at offset {info.first_offset}, but the chain of "
            f"{info.topic}[{info.partition}] ends at {head.entry.last_offset}: the archive has "
            "a gap or an overlap; run `auditstream verify`"
        )
    return ChainEntry(
        topic=info.topic,
        partition=info.partition,
        key=info.key,
        sha256=sha256_hex(data),
        size=len(data),
        first_offset=info.first_offset,
        last_offset=info.last_offset,
        count=info.count,
        skipped_offsets=info.skipped_offsets,
        first_timestamp=info.first_timestamp,
        last_timestamp=info.last_timestamp,
        prev=head.hash if head is not None else None,
        horizon=info.first_offset if head is None and info.first_offset > 0 else None,
    )


def append_entry(
    store: ObjectStore, data: bytes, info: ObjectInfo, head: ChainHead | None
) -> ChainHead:
    """Claim the chain entry for an object written (or adopted) after ``head``.

    When the key is already taken the entry there must be the same one (another
    sink got there first with the same object and chain): it is adopted.
    """
    entry = make_entry(data, info, head)
    body = entry.to_bytes()
    if store.put_if_absent(entry.entry_key, body):
        return ChainHead(entry, sha256_hex(body))
    theirs = store.get(entry.entry_key)
    if theirs != body:
        raise SinkError(
            f"chain entry {entry.entry_key} in {store.location} differs from the entry for the "
            f"object {info.key} as stored: the archive was altered or two chains forked; "
            "run `auditstream verify`"
        )
    log.info("archive: chain entry %s was already written; adopting it", entry.entry_key)
    return ChainHead(entry, sha256_hex(theirs))


def read_chain_head(store: ObjectStore, topic: str, partition: int) -> ChainHead | None:
    """The newest entry of a partition's chain, or None when it has none."""
    keys = [k for k in store.list(chain_prefix(topic, partition)) if k.endswith(".json")]
    if not keys:
        return None
    data = store.get(keys[-1])
    try:
        entry = ChainEntry.from_bytes(data)
    except ValueError as exc:
        raise SinkError(
            f"chain entry {keys[-1]} in {store.location} is unreadable: {exc}"
        ) from None
    if entry.entry_key != keys[-1] or (entry.topic, entry.partition) != (topic, partition):
        raise SinkError(
            f"chain entry {keys[-1]} in {store.location} describes {entry.key}: the chain was "
            "altered; run `auditstream verify`"
        )
    return ChainHead(entry, sha256_hex(data))


def repair_chain(store: ObjectStore, topic: str, partition: int) -> ChainHead | None:
    """Bring a partition's chain up to its newest object; the chain head after that.

    Objects newer than the chain head (a crash between an object and its entry,
    or another sink that is still writing) get their entries now, in order.
    """
    from pipeline.sinks.archive import partition_prefix, read_info

    head = read_chain_head(store, topic, partition)
    if head is not None:
        try:
            store.get(head.entry.key, max_bytes=1)
        except KeyError:
            raise SinkError(
                f"the chain of {topic}[{partition}] in {store.location} ends with "
                f"{head.entry.key}, which is missing: the archive was altered; run "
                "`auditstream verify`"
            ) from None
    after = head.entry.key if head is not None else ""
    keys = [
        k
        for k in store.list(partition_prefix(topic, partition))
        if k.endswith(".avro") and k.encode() > after.encode()
    ]
    for key in keys:
        data = store.get(key)
        try:
            info = read_info(key, data)
        except ValueError as exc:
            raise SinkError(f"archive object {key} in {store.location}: {exc}") from None
        head = append_entry(store, data, info, head)
        log.warning(
            "archive: %s had no chain entry (a crash after writing it?); wrote %s",
            key,
            head.entry.entry_key,
        )
    return head
