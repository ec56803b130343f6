"""The archive: container files, the filesystem store's claim, resume and adoption."""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from pipeline import telemetry
from pipeline.errors import ConfigError, TransportError
from pipeline.sinks.archive import (
    ArchiveSink,
    archive_head,
    encode_object,
    object_key,
    read_info,
    read_records,
    sync_marker,
)
from pipeline.sinks.base import Batch, Record
from pipeline.sinks.storage import FilesystemStore, ObjectNotFound
from pipeline.sinks.storage.s3 import S3Store

T = "access-events"


def rec(offset: int, partition: int = 3, topic: str = T, value: bytes | None = None) -> Record:
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_type=2,
        timestamp=1_700_000_000_000 + offset,
        key=b"actor-%d" % (offset % 7) if offset % 5 else None,
        value=value if value is not None else (b"\xc3\x01" + bytes([offset % 256]) * 40),
        headers=(("trace", b"abc"), ("empty", None)) if offset % 2 else (),
    )


# -- container files -------------------------------------------------------------


def test_key_layout_is_zero_padded_for_offset_order() -> None:
    assert object_key(T, 3, 1234) == "access-events/00003/00000000000000001234.avro"


def test_same_records_give_identical_bytes() -> None:
    records = [rec(o) for o in range(100, 400)]
    first, info = encode_object(records, 100)
    again, _ = encode_object([rec(o) for o in range(100, 400)], 100)
    assert first == again
    assert sync_marker(info.key) in first
    other, _ = encode_object(records, 99)  # another key, another sync marker
    assert other != first


def test_records_read_back_byte_identical_with_metadata() -> None:
    garbage = b"\x00\xff not avro at all"
    records = [rec(10), rec(11, value=garbage), rec(12, value=b""), rec(13)]
    data, info = encode_object(records, 10)
    back = read_records(data)
    assert [r["offset"] for r in back] == [10, 11, 12, 13]
    assert back[1]["value"] == garbage
    assert back[2]["value"] == b""
    assert back[0]["key"] is None and back[1]["key"] == b"actor-4"
    assert back[1]["headers"] == [
        {"key": "trace", "value": b"abc"},
        {"key": "empty", "value": None},
    ]
    assert back[1]["timestamp_type"] == "log_append_time"
    assert back[1]["timestamp"] == 1_700_000_000_011
    assert read_info(info.key, data) == info
    assert (info.first_offset, info.last_offset, info.count, info.skipped_offsets) == (10, 13, 4, 0)


def test_broker_skipped_offsets_are_counted() -> None:
    # 20 and 21 are transaction markers; the range starts at 18 after the previous object.
    records = [rec(19), rec(22), rec(23)]
    _, info = encode_object(records, 18)
    assert info.key.endswith("00000000000000000018.avro")
    assert info.count == 3
    assert info.skipped_offsets == 3  # 18, 20, 21


def test_records_must_be_one_partition_in_order() -> None:
    with pytest.raises(ValueError):
        encode_object([rec(2), rec(1)], 1)
    with pytest.raises(ValueError):
        encode_object([rec(1), rec(2, partition=4)], 1)
    with pytest.raises(ValueError):
        encode_object([rec(5)], 6)


# -- the filesystem store -------------------------------------------------------------


def test_put_if_absent_claims_once_and_keeps_the_first_bytes(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    key = object_key(T, 0, 0)
    assert store.put_if_absent(key, b"first") is True
    assert store.put_if_absent(key, b"second") is False
    assert store.get(key) == b"first"
    assert store.get(key, max_bytes=3) == b"fir"
    path = tmp_path / key
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary files left


def test_listing_is_in_offset_order_and_skips_hidden_files(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    for offset in (1000, 5, 20):
        store.put_if_absent(object_key(T, 1, offset), b"x")
    store.put_if_absent(object_key(T, 10, 0), b"x")
    (tmp_path / T / "00001" / ".partial.tmp").write_bytes(b"")
    assert store.list(f"{T}/00001/") == [object_key(T, 1, o) for o in (5, 20, 1000)]
    assert store.list("nothing/") == []
    with pytest.raises(ObjectNotFound):
        store.get(object_key(T, 1, 6))


def test_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FilesystemStore(tmp_path).put_if_absent("../outside.avro", b"x")


def test_store_failures_are_transport_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(TransportError):
        FilesystemStore(blocker).put_if_absent("a/b.avro", b"x")


# -- the sink: resume from the archive, adopt on a refused claim ------------------------


def batch_of(*offsets: int, partition: int = 3) -> Batch:
    batch = Batch(records=[rec(o, partition) for o in offsets])
    batch.attempts = 1
    return batch


def test_open_resumes_at_the_archive_head(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    sink = ArchiveSink(store)
    assert sink.open([(T, 3)]) == {}
    sink.write(batch_of(0, 1, 2))
    sink.write(batch_of(3, 4))
    assert archive_head(store, T, 3) is not None
    fresh = ArchiveSink(store)
    assert fresh.open([(T, 3), (T, 4)]) == {(T, 3): 5}
    assert store.list(f"{T}/00003/") == [object_key(T, 3, 0), object_key(T, 3, 3)]


def test_objects_are_contiguous_and_count_leading_gaps(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    sink = ArchiveSink(store)
    sink.open([(T, 3)])
    sink.write(batch_of(0, 1, 2))
    sink.write(batch_of(4, 5))  # 3 was a transaction marker
    info = archive_head(store, T, 3)
    assert info is not None
    assert (info.first_offset, info.last_offset, info.count, info.skipped_offsets) == (3, 5, 2, 1)


def test_one_object_per_partition_of_a_batch(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    sink = ArchiveSink(store)
    before = telemetry.ARCHIVE_OBJECTS.labels(topic="dlq")._value.get()
    batch = Batch(records=[rec(0, 0), rec(0, 1, topic="dlq"), rec(1, 0), rec(1, 1, topic="dlq")])
    batch.attempts = 1
    sink.write(batch)
    assert [k for k in store.list("") if not k.startswith("_chain/")] == [
        object_key(T, 0, 0),
        object_key("dlq", 1, 0),
    ]
    assert batch.settled == {r.ref for r in batch.records}
    assert telemetry.ARCHIVE_OBJECTS.labels(topic="dlq")._value.get() - before == 1


def test_a_refused_claim_adopts_a_longer_object_and_skips_past_it(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    theirs, _ = encode_object([rec(o) for o in range(10, 30)], 10)
    store.put_if_absent(object_key(T, 3, 10), theirs)
    sink = ArchiveSink(store)
    sink._next[(T, 3)] = 10  # as if opened before the other writer got there
    batch = batch_of(10, 11, 12)
    sink.write(batch)
    assert sink.pre_commit(batch.next_offsets()) == {(T, 3): 30}
    assert store.get(object_key(T, 3, 10)) == theirs  # not replaced
    assert store.list(f"{T}/") == [object_key(T, 3, 10)]


def test_a_refused_claim_adopts_a_shorter_object_and_writes_the_rest(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    theirs, _ = encode_object([rec(o) for o in range(10, 13)], 10)
    store.put_if_absent(object_key(T, 3, 10), theirs)
    sink = ArchiveSink(store)
    sink._next[(T, 3)] = 10
    batch = batch_of(*range(10, 20))
    sink.write(batch)
    assert sink.pre_commit(batch.next_offsets()) == {(T, 3): 20}
    assert store.list(f"{T}/") == [object_key(T, 3, 10), object_key(T, 3, 13)]
    rest = read_records(store.get(object_key(T, 3, 13)))
    assert [r["offset"] for r in rest] == list(range(13, 20))


def test_a_retry_after_a_partial_write_does_not_write_twice(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    sink = ArchiveSink(store)
    batch = Batch(records=[rec(0, 0), rec(0, 1)])
    batch.attempts = 1
    real_put = store.put_if_absent
    calls: list[str] = []

    def flaky(key: str, data: bytes) -> bool:
        if key.startswith("_chain/"):
            return real_put(key, data)
        calls.append(key)
        if len(calls) == 2:
            raise TransportError("disk hiccup")
        return real_put(key, data)

    store.put_if_absent = flaky  # type: ignore[method-assign]
    with pytest.raises(TransportError):
        sink.write(batch)
    batch.attempts = 2
    sink.write(batch)
    assert calls == [object_key(T, 0, 0), object_key(T, 1, 0), object_key(T, 1, 0)]


# -- the S3 store (against a fake client; the real one is tested in integration) ----------


class FakeS3:
    def __init__(self, lock: bool = True) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[dict[str, Any]] = []
        self.lock = lock

    def put_object(self, **params: Any) -> dict[str, Any]:
        self.puts.append(params)
        if params.get("IfNoneMatch") == "*" and params["Key"] in self.objects:
            raise ClientError(
                {"Error": {"Code": "PreconditionFailed", "Message": "exists"}}, "PutObject"
            )
        self.objects[params["Key"]] = params["Body"]
        return {}

    def get_object_lock_configuration(self, **params: Any) -> dict[str, Any]:
        if not self.lock:
            raise ClientError(
                {"Error": {"Code": "ObjectLockConfigurationNotFoundError"}}, "GetObjectLock"
            )
        return {"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled"}}

    def get_object(self, **params: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "NoSuchBucket"}}, "GetObject")


def test_s3_claims_with_if_none_match_and_locks_when_the_bucket_has_object_lock() -> None:
    client = FakeS3()
    store = S3Store(client, "b", lock_days=400)  # type: ignore[arg-type]
    assert store.put_if_absent("t/00000/00000000000000000000.avro", b"one") is True
    assert store.put_if_absent("t/00000/00000000000000000000.avro", b"two") is False
    assert client.objects["t/00000/00000000000000000000.avro"] == b"one"
    put = client.puts[0]
    assert put["IfNoneMatch"] == "*"
    assert put["ObjectLockMode"] == "COMPLIANCE"
    assert isinstance(put["ObjectLockRetainUntilDate"], datetime)
    assert put["ChecksumAlgorithm"] == "SHA256"
    unlocked = S3Store(FakeS3(lock=False), "b")  # type: ignore[arg-type]
    unlocked.put_if_absent("k.avro", b"x")
    assert "ObjectLockMode" not in unlocked.client.puts[0]  # type: ignore[attr-defined]


def test_s3_configuration_mistakes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="s3_bucket"):
        S3Store(FakeS3(), "missing").get("k.avro")  # type: ignore[arg-type]


def test_a_zstandard_archive_object_is_deterministic_and_reads_back() -> None:
    records = [rec(o) for o in range(0, 200)]
    data, info = encode_object(records, 0, codec="zstandard")
    again, _ = encode_object([rec(o) for o in range(0, 200)], 0, codec="zstandard")
    assert data == again and b"zstandard" in data[:512]
    assert [r["offset"] for r in read_records(data)] == list(range(200))
    assert read_info(info.key, data) == info


def test_the_archive_codec_is_checked_before_the_sink_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from pipeline.sinks.archive import check_codec

    check_codec("deflate")
    check_codec("zstandard")  # the dev install has the zstd extra
    with pytest.raises(ConfigError, match="not one of"):
        check_codec("snappy")
    monkeypatch.setitem(sys.modules, "compression.zstd", None)
    monkeypatch.setitem(sys.modules, "backports.zstd", None)
    with pytest.raises(ConfigError, match=r"pip install 'auditstream\[zstd\]'"):
        check_codec("zstandard")
