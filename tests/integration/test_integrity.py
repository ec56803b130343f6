"""The chained, locked archive against the real stack: Object Lock, SIGKILL, verify."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.codec import Encoding, encode
from pipeline.integrity.chain import chain_prefix, read_chain_head
from pipeline.integrity.commands import reconcile_settings
from pipeline.integrity.digest import DigestSigner
from pipeline.integrity.verify import TrustedKeys, verify_archive
from pipeline.schemas import ACCESS_EVENT, default_store
from pipeline.settings import Settings, to_env
from pipeline.sinks.commands import archive_runner, opensearch_runner
from pipeline.sinks.opensearch import make_client
from pipeline.sinks.storage import ObjectStore, open_store
from pipeline.sinks.storage.s3 import S3Store
from pipeline.stack import LocalStack
from pipeline.worker.processor import InputRecord, Processor
from tests.factories import make_event
from tests.integration.processes import PipelineProcess, read_topic
from tests.integration.test_sinks import (
    _expected,
    _raw_messages,
    _with,
    archived,
    lag,
    produce,
    running,
    wait_until,
)

STORE = default_store()

# -- helpers ------------------------------------------------------------------------------

_SINK = (
    "import argparse, sys\n"
    "from pipeline.settings import load_settings\n"
    "from pipeline.sinks.commands import run_archive\n"
    "args = argparse.Namespace(instance_id=sys.argv[1], session_timeout_ms=6000, "
    "metrics_port=None)\n"
    "sys.exit(run_archive(args, load_settings()))\n"
)


class ArchiveProcess(PipelineProcess):
    """``auditstream sink archive`` in its own process (without the CLI's other commands)."""

    def __init__(
        self, settings: Settings, *, log_dir: Path, name: str, instance: str, script: str = _SINK
    ) -> None:
        super().__init__(settings, log_dir=log_dir, name=name)
        self.instance = instance
        self.script = script

    def start(self, **env_overrides: str) -> ArchiveProcess:
        env = {**os.environ, **to_env(self.settings), **env_overrides}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.script, self.instance],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self


@pytest.fixture
def archive_settings(pipeline_settings: Settings) -> Settings:
    return _with(
        pipeline_settings,
        sink={
            "archive_max_records": 300,
            "archive_max_ms": 150,
            "retry_initial_s": 0.2,
            "retry_max_s": 1.0,
        },
    )


def s3_settings(local_stack: LocalStack, settings: Settings) -> Settings:
    """``settings`` on a fresh bucket with Object Lock (digests must not mix between tests)."""
    bucket = f"it-{uuid.uuid4().hex[:12]}"
    settings = _with(settings, archive={"backend": "s3", "s3_bucket": bucket})
    store = open_store(settings.archive)
    assert isinstance(store, S3Store)
    store.client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return settings


def assert_every_offset_once(
    store: ObjectStore, topic: str, delivered: list[tuple[int, int, bytes | None, bytes | None]]
) -> None:
    got = archived(store, topic)
    expected = _expected(delivered)
    for partition, records in expected.items():
        assert [(r["offset"], r["key"], r["value"]) for r in got[partition]] == records


def sign_and_verify(store: ObjectStore) -> str:
    key = Ed25519PrivateKey.generate()
    DigestSigner(store, key, 3600).sign()
    report = verify_archive(store, TrustedKeys(public_keys=[key.public_key()]))
    assert report.ok, report.text()
    assert report.uncovered_objects == 0 and not report.pending_objects
    return report.summary()


# -- Object Lock ----------------------------------------------------------------------------


def test_a_locked_object_version_cannot_be_deleted_and_survives_an_overwrite(
    local_stack: LocalStack, pipeline_settings: Settings
) -> None:
    settings = s3_settings(local_stack, pipeline_settings)
    store = open_store(settings.archive)
    assert isinstance(store, S3Store) and store.object_lock
    client, bucket = store.client, store.bucket
    key = f"{settings.topics.input}/00000/00000000000000000000.avro"
    assert store.put_if_absent(key, b"original")
    head = client.head_object(Bucket=bucket, Key=key)
    version = head["VersionId"]
    retention = client.get_object_retention(Bucket=bucket, Key=key, VersionId=version)
    assert retention["Retention"]["Mode"] == "COMPLIANCE"
    until = retention["Retention"]["RetainUntilDate"]
    assert until > datetime.now(UTC) + timedelta(days=399)

    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "InvalidRequest")
    with pytest.raises(ClientError):  # governance bypass does not apply to COMPLIANCE
        client.delete_object(
            Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True
        )
    # An overwrite (not through the store: it never overwrites) makes a new version.
    client.put_object(Bucket=bucket, Key=key, Body=b"overwritten")
    original = client.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    assert original == b"original"
    versions = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert len(versions) == 2
    # And the conditional create still refuses the key.
    assert store.put_if_absent(key, b"again") is False


def test_the_archive_on_s3_is_chained_locked_and_verifies_clean(
    local_stack: LocalStack, archive_settings: Settings
) -> None:
    settings = s3_settings(local_stack, archive_settings)
    store = open_store(settings.archive)
    assert isinstance(store, S3Store)
    topic = settings.topics.input
    delivered = produce(settings, topic, _raw_messages(1500, 3))
    group = settings.groups.sink_archive
    topics = [topic, settings.topics.enriched, settings.topics.dead_letter, settings.topics.alerts]
    with running(archive_runner(settings)):
        wait_until("the archive to catch up", lambda: lag(settings, group, topics) == 0)
    assert_every_offset_once(store, topic, delivered)
    entry = store.list(chain_prefix(topic, 0))[0]
    retention = store.client.get_object_retention(Bucket=store.bucket, Key=entry)
    assert retention["Retention"]["Mode"] == "COMPLIANCE"
    summary = sign_and_verify(store)
    print(f"\nverify on S3: {summary}")
    digest = store.list("_digest/")[0]
    with pytest.raises(ClientError):
        version = store.client.head_object(Bucket=store.bucket, Key=digest)["VersionId"]
        store.client.delete_object(Bucket=store.bucket, Key=digest, VersionId=version)


# -- SIGKILL ----------------------------------------------------------------------------------


def test_a_sigkilled_archive_sink_restarts_into_a_clean_chain(
    archive_settings: Settings, tmp_path: Path
) -> None:
    settings = archive_settings
    topic = settings.topics.input
    store = open_store(settings.archive)
    partitions = 4
    delivered = produce(settings, topic, _raw_messages(12000, partitions))

    def objects() -> int:
        return len(store.list(f"{topic}/"))

    # Kill it several times mid-archiving, traffic arriving in between.
    for round_ in range(3):
        proc = ArchiveProcess(
            settings, log_dir=tmp_path, name=f"archive-{round_}", instance="archiver-1"
        ).start()
        start = objects()
        wait_until("a few more objects", lambda s=start: objects() >= s + 6, timeout=120)
        proc.kill()
        delivered += produce(settings, topic, _raw_messages(1000, partitions))

    # The window between an object and its chain entry, made exact: the newest entry of a
    # partition is absent while its object exists, as after a SIGKILL right between the two.
    head = read_chain_head(store, topic, 0)
    assert head is not None
    (Path(settings.archive.path) / head.entry.entry_key).unlink()
    assert read_chain_head(store, topic, 0) != head

    # A fresh group (no committed offsets at all): the archive alone says where to go on.
    fresh = _with(settings, groups={"sink_archive": settings.groups.sink_archive + "-fresh"})
    final = ArchiveProcess(fresh, log_dir=tmp_path, name="archive-final", instance="other").start()
    total = len(delivered)
    try:
        wait_until(
            "the archive to hold everything",
            lambda: (
                sum(
                    (h.next_offset if (h := read_chain_head(store, topic, p)) else 0)
                    for p in range(partitions)
                )
                >= total
            ),
            timeout=180,
        )
        assert final.running(), final.log_tail()
    finally:
        status = final.stop()
    assert status == 0, final.log_tail()
    assert read_chain_head(store, topic, 0) is not None
    assert_every_offset_once(store, topic, delivered)
    print(f"\nafter 3 SIGKILLs and a repaired chain: {sign_and_verify(store)}")


# -- reconcile ------------------------------------------------------------------------------


def test_reconcile_accounts_for_every_raw_offset_and_names_what_is_not(
    archive_settings: Settings,
) -> None:
    settings = _with(
        archive_settings,
        opensearch={"events_index_prefix": f"it-{uuid.uuid4().hex[:8]}-events"},
        sink={"batch_max_records": 500, "batch_max_ms": 200},
    )
    topics = settings.topics
    access = STORE.latest(ACCESS_EVENT)
    events = [make_event() for _ in range(300)]
    messages: list[Any] = [
        (e["actor"]["id"].encode(), encode(e, access, Encoding.SINGLE_OBJECT), None, i % 3)
        for i, e in enumerate(events)
    ]
    messages += [(None, b"\x00\x01 not an event", None, 0), (None, None, None, 1)]
    messages.append((b"again", encode(events[0], access, Encoding.SINGLE_OBJECT), None, 2))
    delivered = produce(settings, topics.input, messages)

    # The worker's decisions, made in-process, written to the derived topics.
    processor = Processor(settings, STORE)
    outputs: dict[str, list[Any]] = {topics.enriched: [], topics.dead_letter: []}
    for msg in read_topic(settings, topics.input, len(delivered)):
        for out in processor.process(InputRecord.from_message(msg)):
            outputs[out.topic].append((out.key, out.value, out.headers or None, None))
    for topic, batch in outputs.items():
        produce(settings, topic, batch)
    archive_group = settings.groups.sink_archive
    archive_topics = [topics.input, topics.enriched, topics.dead_letter, topics.alerts]
    search_group = settings.groups.sink_opensearch
    with running(archive_runner(settings)), running(opensearch_runner(settings)):
        wait_until(
            "both sinks to catch up",
            lambda: (
                lag(settings, archive_group, archive_topics) == 0
                and lag(settings, search_group, [topics.enriched, topics.alerts]) == 0
            ),
        )
    report = reconcile_settings(settings, None, None)
    assert report.ok, report.findings
    assert (report.raw, report.indexed, report.dead_lettered, report.duplicates) == (
        303,
        300,
        2,
        1,
    )
    print(f"\nreconcile: {report.summary()}")

    # One document lost, one with no raw source: both are named.
    client = make_client(settings.opensearch)
    alias = settings.opensearch.events_index_prefix
    lost = events[7]["event_id"]
    (hit,) = client.search(index=alias, body={"query": {"ids": {"values": [lost]}}})["hits"]["hits"]
    client.delete(index=hit["_index"], id=lost, refresh=True)  # core has no delete-by-query
    ghost = client.search(index=alias, body={"size": 1})["hits"]["hits"][0]
    client.index(index=ghost["_index"], id="ghost-event", body=ghost["_source"], refresh=True)
    report = reconcile_settings(settings, None, None)
    kinds = {(f.kind, f.where if f.kind == "no_raw_source" else f.detail) for f in report.findings}
    assert kinds == {
        ("not_indexed", f"event {lost} is in no index"),
        ("no_raw_source", "ghost-event"),
    }
