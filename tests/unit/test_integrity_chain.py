"""The per-partition hash chain the archive sink writes beside its objects."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.integrity.chain import (
    ChainEntry,
    append_entry,
    chain_prefix,
    entry_key,
    read_chain_head,
    repair_chain,
)
from pipeline.sinks.archive import ArchiveSink, encode_object, object_key
from pipeline.sinks.base import Batch, Record, SinkError
from pipeline.sinks.storage import FilesystemStore

T = "access-events"


def rec(offset: int, partition: int = 0) -> Record:
    return Record(
        topic=T,
        partition=partition,
        offset=offset,
        timestamp_type=2,
        timestamp=1_700_000_000_000 + offset * 10,
        key=b"k",
        value=b"v%d" % offset,
    )


def write(sink: ArchiveSink, *offsets: int, partition: int = 0) -> Batch:
    batch = Batch(records=[rec(o, partition) for o in offsets])
    batch.attempts = 1
    sink.write(batch)
    return batch


def entries(store: FilesystemStore, partition: int = 0) -> list[ChainEntry]:
    return [ChainEntry.from_bytes(store.get(k)) for k in store.list(chain_prefix(T, partition))]


def test_each_object_gets_an_entry_linked_to_the_one_before(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    sink = ArchiveSink(store)
    sink.open([(T, 0)])
    write(sink, 0, 1, 2)
    write(sink, 4, 5)  # 3 was a transaction marker
    first, second = entries(store)
    obj = store.get(object_key(T, 0, 0))
    assert first.key == object_key(T, 0, 0)
    assert first.sha256 == hashlib.sha256(obj).hexdigest() and first.size == len(obj)
    assert (first.first_offset, first.last_offset, first.count, first.prev) == (0, 2, 3, None)
    assert (first.first_timestamp, first.last_timestamp) == (1_700_000_000_000, 1_700_000_000_020)
    assert first.horizon is None
    first_bytes = store.get(entry_key(T, 0, 0))
    assert second.prev == hashlib.sha256(first_bytes).hexdigest()
    assert (second.first_offset, second.last_offset, second.skipped_offsets) == (3, 5, 1)
    assert first_bytes.startswith(b'{"count":3,') and b" " not in first_bytes  # canonical


def test_entries_are_the_same_bytes_for_the_same_records(tmp_path: Path) -> None:
    stores = [FilesystemStore(tmp_path / "a"), FilesystemStore(tmp_path / "b")]
    for store in stores:
        sink = ArchiveSink(store)
        sink.open([(T, 0)])
        write(sink, 0, 1)
        write(sink, 2, 3, 4)
    a, b = stores
    assert a.list("") == b.list("")
    assert all(a.get(k) == b.get(k) for k in a.list(""))


def test_a_chain_that_starts_late_records_its_horizon(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    sink = ArchiveSink(store)
    sink.open([(T, 0)])
    write(sink, 500, 501)  # Kafka had already deleted 0-499
    (entry,) = entries(store)
    assert (entry.first_offset, entry.horizon) == (500, 500)


def test_a_crash_between_object_and_entry_is_repaired_on_open(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    sink = ArchiveSink(store)
    sink.open([(T, 0)])
    write(sink, 0, 1, 2)
    # The process died right after claiming the next object: no entry for it.
    data, info = encode_object([rec(3), rec(4)], 3)
    assert store.put_if_absent(info.key, data)
    assert len(entries(store)) == 1
    fresh = ArchiveSink(store)
    assert fresh.open([(T, 0)]) == {(T, 0): 5}
    chained = entries(store)
    assert [e.key for e in chained] == [object_key(T, 0, 0), info.key]
    assert chained[1].sha256 == hashlib.sha256(data).hexdigest()
    write(fresh, 5, 6)
    assert [e.first_offset for e in entries(store)] == [0, 3, 5]


def test_an_object_adopted_from_another_sink_is_chained_in_order(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    ours, theirs = ArchiveSink(store), ArchiveSink(store)
    ours.open([(T, 0)])
    theirs.open([(T, 0)])
    write(theirs, 0, 1, 2)  # the other sink wrote (and chained) first
    batch = write(ours, 0, 1, 2, 3, 4)  # adopts 0-2, writes 3-4 after it
    assert ours.pre_commit(batch.next_offsets()) == {(T, 0): 5}
    assert [(e.first_offset, e.last_offset) for e in entries(store)] == [(0, 2), (3, 4)]


def test_an_entry_that_disagrees_with_the_object_stops_the_sink(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    data, info = encode_object([rec(0)], 0)
    store.put_if_absent(info.key, data)
    store.put_if_absent(entry_key(T, 0, 0), b'{"forged": true}')
    with pytest.raises(SinkError, match="differs"):
        append_entry(store, data, info, None)


def test_repair_refuses_a_chain_whose_newest_object_is_gone(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    sink = ArchiveSink(store)
    sink.open([(T, 0)])
    write(sink, 0, 1)
    path = tmp_path / object_key(T, 0, 0)
    path.unlink()
    with pytest.raises(SinkError, match="missing"):
        repair_chain(store, T, 0)
    assert read_chain_head(store, T, 0) is not None
