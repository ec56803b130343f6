"""``retention apply --archive`` against the real stack: a filesystem archive the sink wrote
from Kafka, and versitygw's S3 Object Lock, each ending with a clean ``verify``."""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from confluent_kafka import Producer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.integrity.chain import ChainEntry, chain_prefix, entry_key
from pipeline.integrity.digest import DigestSigner
from pipeline.integrity.horizon import Horizon, horizon_key, horizon_prefix
from pipeline.integrity.verify import TrustedKeys, VerifyReport, verify_archive
from pipeline.retention import run_apply
from pipeline.retention_archive import apply_archive
from pipeline.settings import Settings
from pipeline.sinks.archive import ArchiveSink, object_key, partition_prefix
from pipeline.sinks.base import Batch, Record
from pipeline.sinks.commands import archive_runner
from pipeline.sinks.storage import ObjectLocked, ObjectStore, open_store
from pipeline.sinks.storage.s3 import S3Store
from tests.integration.search_docs import with_prefixes
from tests.integration.test_sinks import _with, lag, running, wait_until

DAY = timedelta(days=1)


def produce_at(settings: Settings, topic: str, count: int, when: datetime) -> None:
    """``count`` records to partition 0 of ``topic``, stamped ``when`` (create time)."""
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    stamp = int(when.timestamp() * 1000)
    for i in range(count):
        producer.produce(topic, value=b"record-%d" % i, key=b"k", partition=0, timestamp=stamp + i)
    assert producer.flush(30) == 0


def archive_until_caught_up(settings: Settings) -> None:
    topics = settings.topics
    group = settings.groups.sink_archive
    archived = [topics.input, topics.enriched, topics.dead_letter, topics.alerts]
    with running(archive_runner(settings)):
        wait_until("the archive to catch up", lambda: lag(settings, group, archived) == 0)


def age(root: Path, keys: list[str], by: timedelta) -> None:
    """As if these files had been written ``by`` ago (the filesystem lock runs from then)."""
    then = (datetime.now(UTC) - by).timestamp()
    for key in keys:
        os.utime(root / key, (then, then))


def chain_offsets(store: ObjectStore, topic: str) -> list[int]:
    return [
        ChainEntry.from_bytes(store.get(k)).first_offset for k in store.list(chain_prefix(topic, 0))
    ]


def sign_and_verify(store: ObjectStore, key: Ed25519PrivateKey) -> VerifyReport:
    DigestSigner(store, key, 3600).sign()
    report = verify_archive(store, TrustedKeys(public_keys=[key.public_key()]))
    assert report.ok, report.text()
    return report


def test_archive_retention_on_the_filesystem_removes_exactly_the_expired_prefix(
    pipeline_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # A one-day policy (and lock) so that Kafka's own 14-day retention keeps the test's
    # records: indices one day, archive lock one day.
    settings = _with(
        with_prefixes(pipeline_settings),
        retention={"events_days": 1, "alerts_days": 1},
        archive={"lock_days": 1},
        sink={"archive_max_records": 100, "archive_max_ms": 150},
    )
    topic = settings.topics.enriched  # create time: the producer's timestamps are kept
    store = open_store(settings.archive)
    root = Path(settings.archive.path)
    key = Ed25519PrivateKey.generate()
    now = datetime.now(UTC)
    for _ in range(3):  # at least three objects of three-day-old records
        produce_at(settings, topic, 100, now - 3 * DAY)
        archive_until_caught_up(settings)
    old = chain_offsets(store, topic)
    for _ in range(2):  # at least two objects of records inside the policy
        produce_at(settings, topic, 100, now - timedelta(hours=1))
        archive_until_caught_up(settings)
    first = chain_offsets(store, topic)
    assert len(old) >= 3 and len(first) >= len(old) + 2
    sign_and_verify(store, key)

    def files(offsets: list[int]) -> list[str]:
        return [k for o in offsets for k in (object_key(topic, 0, o), entry_key(topic, 0, o))]

    # Written two days ago, lock passed: all old objects but the second, which stays locked.
    age(root, files([o for o in old if o != old[1]]), 2 * DAY)
    before = store.list("")
    args = argparse.Namespace(dry_run=True, ism=False, archive=True, now=None)
    assert run_apply(args, settings) == 0
    out = capsys.readouterr().out
    assert store.list("") == before  # a dry run changes nothing
    assert f"{topic}[0]: would remove 1 object," in out
    assert f"horizon would be offset {old[1]:,}" in out and "is locked until" in out

    args = argparse.Namespace(dry_run=False, ism=False, archive=True, now=None)
    assert run_apply(args, settings) == 0
    out = capsys.readouterr().out
    assert f"{topic}[0]: removed 1 object," in out and f"horizon now offset {old[1]:,}" in out
    assert chain_offsets(store, topic) == first[1:]  # exactly the expired prefix, no hole
    assert store.list(partition_prefix(topic, 0))[0] == object_key(topic, 0, old[1])
    horizon = Horizon.from_bytes(store.get(horizon_key(topic, 0, old[1])))
    assert (horizon.removed_objects, horizon.policy_days) == (1, 1)
    report = verify_archive(store, TrustedKeys(public_keys=[key.public_key()]))
    assert report.ok and report.uncovered_horizons == 1, report.text()
    report = sign_and_verify(store, key)
    assert report.horizons == {f"{topic}[0]": old[1]} and report.uncovered_horizons == 0
    assert f"{topic}[0] starts at its retention horizon, offset {old[1]:,}" in report.text()

    # Once the second lock has passed too, the rest of the old records go; the recent stay.
    age(root, files([old[1]]), 2 * DAY)
    assert run_apply(args, settings) == 0
    out = capsys.readouterr().out
    assert "inside the 1-day archive policy" in out
    assert chain_offsets(store, topic) == first[len(old) :]
    assert store.list(horizon_prefix(topic, 0)) == [
        horizon_key(topic, 0, old[1]),
        horizon_key(topic, 0, first[len(old)]),
    ]
    # The sink resumes after the chain's head, and the archive still verifies clean.
    produce_at(settings, topic, 50, now)
    archive_until_caught_up(settings)
    report = sign_and_verify(store, key)
    assert report.horizons == {f"{topic}[0]": first[len(old)]}
    print(f"\nafter archive retention: {report.summary()}")


def test_archive_retention_on_s3_never_removes_a_locked_object(
    pipeline_settings: Settings,
) -> None:
    bucket = f"it-{uuid.uuid4().hex[:12]}"
    settings = _with(pipeline_settings, archive={"backend": "s3", "s3_bucket": bucket})
    store = open_store(settings.archive)
    assert isinstance(store, S3Store)
    store.client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    topic = settings.topics.input
    old_ms = int((datetime.now(UTC) - 500 * DAY).timestamp() * 1000)

    def write(with_lock: timedelta, *starts: int) -> None:
        locked = S3Store(store.client, bucket, lock_period=with_lock)
        sink = ArchiveSink(locked)
        sink.open([(topic, 0)])
        for start in starts:
            records = [
                Record(topic, 0, o, 2, old_ms + o, b"k", b"v") for o in range(start, start + 10)
            ]
            batch = Batch(records=records)
            batch.attempts = 1
            sink.write(batch)

    write(timedelta(seconds=3), 0, 10)  # a three-second lock: it will have passed
    write(DAY, 20, 30)  # locked for a day
    short = store.retain_until(object_key(topic, 0, 10))
    long = store.retain_until(object_key(topic, 0, 20))
    assert short is not None and long is not None and long > datetime.now(UTC) + DAY / 2
    while datetime.now(UTC) <= short + timedelta(seconds=1):
        time.sleep(0.5)

    # The store itself refuses to delete a version whose lock has not passed.
    version = store.client.head_object(Bucket=bucket, Key=object_key(topic, 0, 20))["VersionId"]
    with pytest.raises(ClientError):
        store.client.delete_object(Bucket=bucket, Key=object_key(topic, 0, 20), VersionId=version)
    with pytest.raises(ObjectLocked):
        store.delete(object_key(topic, 0, 20))

    out: list[str] = []
    result = apply_archive(store, 400, datetime.now(UTC), dry_run=False, out=out.append)
    assert not result.refused, out
    assert store.list(partition_prefix(topic, 0)) == [object_key(topic, 0, o) for o in (20, 30)]
    assert store.list(chain_prefix(topic, 0)) == [entry_key(topic, 0, o) for o in (20, 30)]
    assert not store.client.list_object_versions(Bucket=bucket, Prefix=object_key(topic, 0, 0)).get(
        "Versions"
    )  # every version gone, not hidden behind a delete marker
    assert f"{topic}[0]: removed 2 objects" in out[0] and "is locked until" in out[0]
    hkey = horizon_key(topic, 0, 20)
    lock = store.client.get_object_retention(Bucket=bucket, Key=hkey)["Retention"]
    assert lock["Mode"] == "COMPLIANCE"  # the horizon record is locked like the chain
    key = Ed25519PrivateKey.generate()
    report = sign_and_verify(store, key)
    assert report.horizons == {f"{topic}[0]": 20}

    # A clock two days ahead would plan to remove offsets 20-29, but the store refuses: the
    # horizon is recorded, the object stays, and verify accepts the interrupted removal.
    ahead = datetime.now(UTC) + 2 * DAY
    result = apply_archive(store, 400, ahead, dry_run=False, out=out.append)
    assert [c.name for c in result.refused] == [f"{topic}[0]"]
    assert "Object Lock has not passed" in out[-2]
    assert store.list(partition_prefix(topic, 0)) == [object_key(topic, 0, o) for o in (20, 30)]
    report = verify_archive(store, TrustedKeys(public_keys=[key.public_key()]))
    assert report.ok and report.removal_in_progress == 1, report.text()
    print(f"\nS3 after retention: {report.summary()}")
