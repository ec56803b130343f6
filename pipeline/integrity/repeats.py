"""Repeated records in the derived archives: information for ``verify``, not a problem.

The enriched, alert and dead-letter topics are archived as the worker emitted
them, and at-least-once processing may emit a record again after a crash
(DESIGN, Accounting). Readers (``report``, ``replay``, ``reconcile``) take the
first record per id; ``verify`` counts the others, per topic, by the id each
topic's records carry:

=================  ======================================================
``enriched``       ``event.event_id``
``alerts``         ``alert_id`` and ``revision`` (a new revision is no repeat)
``dead_letters``   ``source_topic``, ``source_partition``, ``source_offset``
=================  ======================================================

The raw input needs no count: its chain covers contiguous offsets, each held
once, so a repeat there could only be an object or entry that verify already
names as a problem. A record that does not decode is counted as unreadable
(also information: the chain already proves it is the record that was written).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.codec import Decoder
from pipeline.errors import DecodeError
from pipeline.schemas import ALERT, DEAD_LETTER, ENRICHED_EVENT, SchemaStore
from pipeline.settings import TopicSettings
from pipeline.sinks.archive import read_records

DerivedKind = Literal["enriched", "alerts", "dead_letters"]
WINDOW = 1_000_000  # distinct ids remembered per derived topic

#: what identifies a record of each derived kind, for people
IDENTITY: dict[DerivedKind, str] = {
    "enriched": "event_id",
    "alerts": "alert_id and revision",
    "dead_letters": "source partition and offset",
}
_SCHEMA: dict[DerivedKind, str] = {
    "enriched": ENRICHED_EVENT,
    "alerts": ALERT,
    "dead_letters": DEAD_LETTER,
}
_ID: dict[DerivedKind, Callable[[dict[str, Any]], Hashable]] = {
    "enriched": lambda r: r["event"]["event_id"],
    "alerts": lambda r: (r["alert_id"], int(r["revision"])),
    "dead_letters": lambda r: (r["source_topic"], r["source_partition"], r["source_offset"]),
}


def derived_topics(topics: TopicSettings) -> dict[str, DerivedKind]:
    """The derived topics the settings name, with their kinds (the raw input is not one)."""
    return {
        topics.enriched: "enriched",
        topics.alerts: "alerts",
        topics.dead_letter: "dead_letters",
    }


@dataclass
class DerivedRepeats:
    """Per derived topic: records read, records repeating an earlier one's id, unreadable ones.

    Ids are remembered per topic as 64-bit hashes of the last :data:`WINDOW`
    distinct ones. A repeat comes from a worker re-emitting what it had not yet
    acknowledged: into the same partition as the first copy (derived records
    go to the input's partition, alerts by their id), at most
    ``worker.max_unacked_per_partition`` records after it, and verify reads a
    partition's objects in order. So the window finds every repeat the
    pipeline can make, while memory stays bounded (some 100 MB a topic)
    however large the archive.
    """

    kinds: dict[str, DerivedKind] = field(default_factory=dict)
    records: Counter[str] = field(default_factory=Counter)
    repeats: Counter[str] = field(default_factory=Counter)
    unreadable: Counter[str] = field(default_factory=Counter)
    _seen: dict[str, set[int]] = field(default_factory=dict, repr=False)
    _order: dict[str, deque[int]] = field(default_factory=dict, repr=False)
    _decoders: dict[str, Decoder] = field(default_factory=dict, repr=False)

    @classmethod
    def for_topics(cls, kinds: Mapping[str, DerivedKind], schemas: SchemaStore) -> DerivedRepeats:
        counter = cls(kinds=dict(kinds))
        for topic, kind in kinds.items():
            counter._decoders[topic] = Decoder(schemas, schemas.latest(_SCHEMA[kind]))
            counter._seen[topic] = set()
            counter._order[topic] = deque()
        return counter

    @property
    def total(self) -> int:
        return sum(self.repeats.values())

    def add(self, topic: str, data: bytes) -> None:
        """Count the records of one archive object of ``topic`` (ignored unless derived)."""
        kind = self.kinds.get(topic)
        if kind is None:
            return
        decoder, seen, identify = self._decoders[topic], self._seen[topic], _ID[kind]
        order = self._order[topic]
        for raw in read_records(data):
            self.records[topic] += 1
            try:
                key = identify(decoder.decode(raw["value"]).record)
            except (DecodeError, KeyError, TypeError, ValueError):
                self.unreadable[topic] += 1
                continue
            digest = hash(key)
            if digest in seen:
                self.repeats[topic] += 1
                continue
            seen.add(digest)
            order.append(digest)
            if len(order) > WINDOW:
                seen.discard(order.popleft())

    def lines(self) -> list[str]:
        """One information line per derived topic that has repeats or unreadable records."""
        out: list[str] = []
        for topic, kind in sorted(self.kinds.items()):
            if self.repeats[topic]:
                out.append(
                    f"{topic}: {self.repeats[topic]:,} repeated record(s) (same "
                    f"{IDENTITY[kind]} as an earlier one: at-least-once processing; readers "
                    "take the first)"
                )
            if self.unreadable[topic]:
                out.append(
                    f"{topic}: {self.unreadable[topic]:,} record(s) that do not decode as "
                    f"{_SCHEMA[kind]}, not counted for repeats"
                )
        return out

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {
            topic: {
                "kind": kind,
                "identity": IDENTITY[kind],
                "records": self.records[topic],
                "repeats": self.repeats[topic],
                "unreadable": self.unreadable[topic],
            }
            for topic, kind in sorted(self.kinds.items())
        }
