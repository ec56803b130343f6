"""``reconcile``: prove the search tier against the raw archive (DESIGN, Accounting).

Each raw (partition, offset) in the window must be exactly one of:

- **dead-lettered**: a dead letter in the dead-letter archive names it as its source;
- a **duplicate**: same ``event_id`` and content hash as an earlier raw offset;
- **indexed**: an OpenSearch document with that ``event_id`` and the same content
  hash; for events older than the search retention, a record in the enriched
  archive with that source offset and hash counts instead.

Anything else is named (``not_indexed``, ``hash_mismatch``, ``not_dead_lettered``),
and so is every event document in the window with no raw source (``no_raw_source``).
Derived archives may repeat a record after a crash: the first per key is taken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.codec import Decoder
from pipeline.errors import RecordError
from pipeline.integrity.chain import ChainEntry, chain_prefix
from pipeline.schemas import ACCESS_EVENT, DEAD_LETTER, ENRICHED_EVENT, SchemaStore
from pipeline.sinks.archive import partition_prefix, read_records
from pipeline.sinks.storage import ObjectStore
from pipeline.stages.validate import validate

MS = 1000
IDS_PER_QUERY = 1000


@dataclass(frozen=True)
class RawFact:
    """What reconcile needs of one raw record."""

    partition: int
    offset: int
    timestamp_ms: int
    event_id: str | None = None  # None: not a valid event (must be dead-lettered)
    content_hash: str | None = None
    occurred_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class Finding:
    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


@dataclass
class ReconcileReport:
    raw: int = 0
    indexed: int = 0
    archived_only: int = 0  # beyond the search retention, found in the enriched archive
    dead_lettered: int = 0
    duplicates: int = 0
    documents: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        return (
            f"{self.raw:,} raw records: {self.indexed:,} indexed, {self.archived_only:,} in the "
            f"enriched archive only, {self.dead_lettered:,} dead-lettered, {self.duplicates:,} "
            f"duplicates; {len(self.findings):,} unaccounted"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "raw": self.raw,
            "indexed": self.indexed,
            "archived_only": self.archived_only,
            "dead_lettered": self.dead_lettered,
            "duplicates": self.duplicates,
            "documents": self.documents,
            "findings": [f.__dict__ for f in self.findings],
        }


def classify(
    raw: Iterable[RawFact],
    dead_letters: set[tuple[int, int]],
    indexed_hashes: Callable[[list[str]], dict[str, str]],
    enriched: dict[tuple[int, int], str],
    search_horizon: datetime,
    documents_in_window: Iterable[str] = (),
    topic: str = "raw",
) -> ReconcileReport:
    """Account for every raw fact; the pure core of :func:`reconcile`."""
    report = ReconcileReport()
    first_seen: dict[str, tuple[str, int, int]] = {}  # event_id -> hash, partition, offset
    to_look_up: list[RawFact] = []
    raw_ids: set[str] = set()
    for fact in sorted(raw, key=lambda f: (f.timestamp_ms, f.partition, f.offset)):
        report.raw += 1
        where = f"{topic}[{fact.partition}]@{fact.offset}"
        if (fact.partition, fact.offset) in dead_letters:
            report.dead_lettered += 1
            continue
        if fact.event_id is None or fact.content_hash is None:
            report.findings.append(
                Finding(
                    "not_dead_lettered",
                    where,
                    f"not a valid event ({fact.error}) and no dead letter names this offset",
                )
            )
            continue
        raw_ids.add(fact.event_id)
        earlier = first_seen.get(fact.event_id)
        if earlier is not None and earlier[0] == fact.content_hash:
            report.duplicates += 1
            continue
        if earlier is None:
            first_seen[fact.event_id] = (fact.content_hash, fact.partition, fact.offset)
        to_look_up.append(fact)
    found: dict[str, str] = {}
    ids = sorted({f.event_id for f in to_look_up if f.event_id is not None})
    for i in range(0, len(ids), IDS_PER_QUERY):
        found.update(indexed_hashes(ids[i : i + IDS_PER_QUERY]))
    for fact in to_look_up:
        assert fact.event_id is not None
        where = f"{topic}[{fact.partition}]@{fact.offset}"
        stored = found.get(fact.event_id)
        if stored == fact.content_hash:
            report.indexed += 1
        elif stored is not None:
            report.findings.append(
                Finding(
                    "hash_mismatch",
                    where,
                    f"event {fact.event_id} is indexed with content hash {stored[:16]}…, the "
                    f"raw record hashes to {str(fact.content_hash)[:16]}…",
                )
            )
        elif (
            fact.occurred_at is not None
            and fact.occurred_at < search_horizon
            and (enriched.get((fact.partition, fact.offset)) == fact.content_hash)
        ):
            report.archived_only += 1
        else:
            report.findings.append(
                Finding("not_indexed", where, f"event {fact.event_id} is in no index")
            )
    for doc_id in documents_in_window:
        report.documents += 1
        if doc_id not in raw_ids:
            report.findings.append(
                Finding(
                    "no_raw_source", doc_id, "an indexed event with no raw record in the window"
                )
            )
    return report


# -- reading the archive ------------------------------------------------------------------


def partitions_of(store: ObjectStore, topic: str) -> list[int]:
    found = set()
    for key in store.list(f"{topic}/"):
        part = key.split("/")[1]
        if part.isdigit():
            found.add(int(part))
    return sorted(found)


def records_in_window(
    store: ObjectStore, topic: str, start: datetime | None, end: datetime | None
) -> Iterator[dict[str, Any]]:
    """Archived records of ``topic`` with a Kafka timestamp in ``[start, end]``."""
    lo = start.timestamp() * MS if start else None
    hi = end.timestamp() * MS if end else None
    for partition in partitions_of(store, topic):
        entries = {
            k.rsplit("/", 1)[1].split(".")[0]: k for k in store.list(chain_prefix(topic, partition))
        }
        for key in store.list(partition_prefix(topic, partition)):
            entry_key = entries.get(key.rsplit("/", 1)[1].split(".")[0])
            if entry_key is not None:  # skip objects wholly outside the window
                entry = ChainEntry.from_bytes(store.get(entry_key))
                if (lo is not None and entry.last_timestamp < lo) or (
                    hi is not None and entry.first_timestamp > hi
                ):
                    continue
            for record in read_records(store.get(key)):
                ts = record["timestamp"]
                if (lo is None or ts >= lo) and (hi is None or ts <= hi):
                    yield record


def raw_facts(
    records: Iterable[dict[str, Any]], schemas: SchemaStore, max_future_skew_s: float
) -> Iterator[RawFact]:
    decoder = Decoder(schemas, schemas.latest(ACCESS_EVENT))
    for record in records:
        base = {
            "partition": record["partition"],
            "offset": record["offset"],
            "timestamp_ms": record["timestamp"],
        }
        try:
            decoded = decoder.decode(record["value"])
            valid = validate(
                decoded.record,
                record_timestamp_ms=record["timestamp"],
                max_future_skew_s=max_future_skew_s,
            )
        except RecordError as exc:
            yield RawFact(**base, error=f"{exc.reason}: {exc}")
            continue
        yield RawFact(
            **base,
            event_id=valid.event["event_id"],
            content_hash=valid.content_hash,
            occurred_at=valid.occurred_at,
        )


def dead_letter_sources(
    records: Iterable[dict[str, Any]], schemas: SchemaStore, source_topic: str
) -> set[tuple[int, int]]:
    decoder = Decoder(schemas, schemas.latest(DEAD_LETTER))
    sources = set()
    for record in records:
        letter = decoder.decode(record["value"]).record
        if letter["source_topic"] == source_topic:
            sources.add((letter["source_partition"], letter["source_offset"]))
    return sources


def enriched_hashes(
    records: Iterable[dict[str, Any]], schemas: SchemaStore
) -> dict[tuple[int, int], str]:
    decoder = Decoder(schemas, schemas.latest(ENRICHED_EVENT))
    hashes: dict[tuple[int, int], str] = {}
    for record in records:
        value = decoder.decode(record["value"]).record
        hashes.setdefault(
            (value["source_partition"], value["source_offset"]), value["content_hash"]
        )
    return hashes


def default_horizon(events_days: int, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=events_days)
