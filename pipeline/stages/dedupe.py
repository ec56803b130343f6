"""Dedupe: every event once, and a conflicting copy is never dropped silently.

Pure logic over a small key-value store (DESIGN, Accounting: "State"). Per
``event_id`` the store keeps one bounded value, the first sighting: content
hash, input partition and offset, and ``occurred_at``.

- no sighting (or one older than the window): **new**, remember it;
- the same partition and offset: **replay**, the same message reprocessed after
  a crash; processed again (downstream is idempotent);
- another offset, the same hash: **duplicate**, dropped and counted;
- another hash: **conflict**, a ``conflicting_duplicate`` dead letter.

Expiry is a sweep on event time, never a RocksDB TTL: entries older than the
partition's watermark minus the window and the allowed lateness are deleted,
and each deletion is written to the changelog as a tombstone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Verdict(StrEnum):
    NEW = "new"
    REPLAY = "replay"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Sighting:
    """The first sighting of an ``event_id``: about 100 bytes, whatever the traffic."""

    content_hash: str
    partition: int
    offset: int
    occurred_us: int

    def encode(self) -> bytes:
        return f"{self.content_hash}|{self.partition}|{self.offset}|{self.occurred_us}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> Sighting:
        content_hash, partition, offset, occurred = raw.decode().split("|")
        return cls(content_hash, int(partition), int(offset), int(occurred))


class Store(Protocol):
    """The state of one input partition (a RocksDB database, or a dict in tests)."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def scan(self, start: bytes | None, limit: int) -> Iterator[tuple[bytes, bytes]]: ...


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    first: Sighting | None


class Deduper:
    """Decides what one sighting is, given the store of its partition."""

    def __init__(self, window_s: float, lateness_s: float) -> None:
        self.window_us = int(window_s * 1_000_000)
        self.lateness_us = int(lateness_s * 1_000_000)
        self._watermarks: dict[int, int] = {}
        self._cursors: dict[int, bytes | None] = {}

    def watermark(self, partition: int) -> int:
        return self._watermarks.get(partition, 0)

    def decide(self, store: Store, event_id: str, current: Sighting) -> Decision:
        """Classify ``current``; a new sighting is stored (the caller writes the changelog)."""
        partition = current.partition
        if current.occurred_us > self._watermarks.get(partition, 0):
            self._watermarks[partition] = current.occurred_us
        key = event_id.encode()
        raw = store.get(key)
        first = Sighting.decode(raw) if raw is not None else None
        if first is None or self._expired(first, partition):
            store.put(key, current.encode())
            return Decision(Verdict.NEW, current)
        if (first.partition, first.offset) == (current.partition, current.offset):
            return Decision(Verdict.REPLAY, first)
        if first.content_hash == current.content_hash:
            return Decision(Verdict.DUPLICATE, first)
        return Decision(Verdict.CONFLICT, first)

    def _expired(self, sighting: Sighting, partition: int) -> bool:
        horizon = self._watermarks.get(partition, 0) - self.window_us - self.lateness_us
        return sighting.occurred_us < horizon

    def sweep(self, store: Store, partition: int, limit: int) -> list[bytes]:
        """Delete up to ``limit`` scanned entries past the window; the keys deleted.

        The scan resumes where the last one stopped, so a sweep costs at most
        ``limit`` reads whatever the size of the table.
        """
        expired: list[bytes] = []
        last: bytes | None = None
        scanned = 0
        for key, raw in store.scan(self._cursors.get(partition), limit):
            scanned += 1
            last = key
            if self._expired(Sighting.decode(raw), partition):
                expired.append(key)
        for key in expired:
            store.delete(key)
        # A short page means the end of the keys: start again from the beginning.
        self._cursors[partition] = last + b"\x00" if scanned == limit and last else None
        return expired


class DictStore:
    """A store in a dict, for tests and benchmarks of the pure logic."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def scan(self, start: bytes | None, limit: int) -> Iterator[tuple[bytes, bytes]]:
        keys = sorted(k for k in self.data if start is None or k >= start)[:limit]
        for key in keys:
            yield key, self.data[key]
