"""The worker's tables: Faust tables on RocksDB, read and written per partition.

Faust recovers each table from its changelog topic on assignment. The worker
reads and writes the partition's RocksDB database directly and writes the
changelog itself through its confluent-kafka producer, so that an input is
acknowledged only after its changelog records are delivered (Faust's own
changelog sends are fire-and-forget: a failure is only logged).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faust

from pipeline.settings import Settings
from pipeline.worker.processor import PartitionState

# Caps per partition database (12 partitions by default): the defaults of Faust
# (64 MB memtables x3, a 2 GB block cache) would let RSS grow to gigabytes.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 8 * 1024 * 1024,
    "block_cache_compressed_size": 0,
    "max_open_files": 256,
}
FAUST_OFFSET_KEY = b"__faust\x00offset__"


def make_table(app: faust.App, name: str, partitions: int) -> Any:
    return app.Table(
        name,
        partitions=partitions,
        key_type=bytes,  # raw bytes: the worker writes the changelog records itself
        value_type=bytes,
        options=dict(ROCKSDB_OPTIONS),
    )


class PartitionStore:
    """One partition's RocksDB database, as :class:`pipeline.stages.dedupe.Store`."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self._db.put(key, value)

    def delete(self, key: bytes) -> None:
        self._db.delete(key)

    def scan(self, start: bytes | None, limit: int) -> Iterator[tuple[bytes, bytes]]:
        it = self._db.iter()
        if start is None:
            it.seek_to_first()
        else:
            it.seek(start)
        count = 0
        while it.valid() and count < limit:
            key = it.key()
            if key != FAUST_OFFSET_KEY:
                yield key, it.value()
                count += 1
            it.next()


class TableStores:
    """The partition stores of one table, and its changelog bookkeeping."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._delivered: dict[int, int] = {}

    @property
    def changelog_topic(self) -> str:
        name: str = self._table.changelog_topic.get_topic_name()
        return name

    def partition(self, partition: int) -> PartitionStore:
        # Looked up each time: Faust closes and reopens databases on rebalance.
        return PartitionStore(self._table.data._db_for_partition(partition))

    def delivered(self, partition: int, offset: int) -> None:
        """Note a delivered changelog record (called on the producer's thread)."""
        if offset > self._delivered.get(partition, -1):
            self._delivered[partition] = offset

    def flush_persisted(self) -> None:
        """Tell Faust how far the changelog holds our writes, so recovery starts there."""
        from faust.types import TP

        delivered, self._delivered = self._delivered, {}
        for partition, offset in delivered.items():
            self._table.data.set_persisted_offset(TP(self.changelog_topic, partition), offset)


class WorkerTables:
    """The worker's tables: dedupe and, with detection, per user and per source address."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        partitions = settings.topics.partitions
        dedupe_on = settings.dedupe.enabled
        detect_on = dedupe_on and settings.detect.enabled

        def table(name: str, on: bool) -> TableStores | None:
            return TableStores(make_table(app, name, partitions)) if on else None

        self.dedupe = table("dedupe", dedupe_on)
        self.users = table("detect-users", detect_on)
        self.ips = table("detect-ips", detect_on)
        self._all = [t for t in (self.dedupe, self.users, self.ips) if t is not None]
        self._by_topic: dict[str, TableStores] = {}

    def state(self, partition: int) -> PartitionState | None:
        """The stores of one input partition, or None when dedupe is off."""
        if self.dedupe is None:
            return None
        return PartitionState(
            dedupe=self.dedupe.partition(partition),
            dedupe_changelog=self.dedupe.changelog_topic,
            users=self.users.partition(partition) if self.users else None,
            users_changelog=self.users.changelog_topic if self.users else "",
        )

    def delivered(self, topic: str, partition: int, offset: int) -> None:
        if not self._by_topic:
            self._by_topic = {t.changelog_topic: t for t in self._all}
        table = self._by_topic.get(topic)
        if table is not None:
            table.delivered(partition, offset)

    def flush_persisted(self) -> None:
        for table in self._all:
            table.flush_persisted()
