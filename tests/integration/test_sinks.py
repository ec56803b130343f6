"""The OpenSearch and archive sinks against the real local stack."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from opensearchpy import OpenSearch

from pipeline import telemetry
from pipeline.codec import Encoding, encode
from pipeline.schemas import ALERT, ENRICHED_EVENT, default_store
from pipeline.settings import Settings
from pipeline.sinks.archive import archive_head, object_info, read_records
from pipeline.sinks.base import SinkRunner
from pipeline.sinks.commands import archive_runner, opensearch_runner
from pipeline.sinks.opensearch import make_client
from pipeline.sinks.storage import ObjectStore, open_store
from pipeline.sinks.storage.s3 import S3Store
from pipeline.stack import LocalStack
from pipeline.stages.validate import content_hash
from tests.factories import make_event
from tests.integration.processes import PipelineProcess

STORE = default_store()
log = logging.getLogger(__name__)


# -- helpers ------------------------------------------------------------------------


def _with(settings: Settings, **sections: dict[str, Any]) -> Settings:
    update = {name: getattr(settings, name).model_copy(update=u) for name, u in sections.items()}
    return settings.model_copy(update=update)


@pytest.fixture
def sink_settings(pipeline_settings: Settings) -> Settings:
    """Per-test topics and groups, own index prefixes, small fast batches."""
    tag = uuid.uuid4().hex[:8]
    return _with(
        pipeline_settings,
        opensearch={
            "events_index_prefix": f"it-{tag}-events",
            "alerts_index_prefix": f"it-{tag}-alerts",
        },
        sink={
            "batch_max_records": 1000,
            "batch_max_ms": 200,
            "archive_max_records": 500,
            "archive_max_ms": 300,
            "retry_initial_s": 0.2,
            "retry_max_s": 1.0,
        },
    )


def enriched_value(event: dict[str, Any], *, offset: int = 0, digest: str | None = None) -> bytes:
    record = {
        "event": event,
        "content_hash": digest or content_hash(event),
        "received_at": event["occurred_at"] + timedelta(milliseconds=40),
        "source_topic": "access-events",
        "source_partition": 0,
        "source_offset": offset,
        "encoding": "single_object",
        "writer_schema": "access-events-value v1",
        "enrichment_errors": [],
    }
    return encode(record, STORE.latest(ENRICHED_EVENT), Encoding.SINGLE_OBJECT)


def alert_value(revision: int, last_seen: datetime) -> bytes:
    record = {
        "alert_id": "alert-it-1",
        "revision": revision,
        "detector": "brute_force",
        "severity": "high",
        "entity_type": "user",
        "entity_id": "u00042",
        "summary": f"revision {revision}",
        "first_seen": last_seen - timedelta(minutes=5),
        "last_seen": last_seen,
        "event_count": 10 * revision,
        "event_ids": [],
        "opened_by_partition": 0,
        "opened_by_offset": 1,
        "attributes": {},
    }
    return encode(record, STORE.latest(ALERT), Encoding.SINGLE_OBJECT)


Message = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]] | None, int | None]


def produce(
    settings: Settings, topic: str, messages: list[Message], **conf: Any
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Produce (key, value, headers, partition); returns (partition, offset, key, value)."""
    producer = Producer(
        {**settings.kafka.client_config(), "enable.idempotence": True, "linger.ms": 20, **conf}
    )
    delivered: list[tuple[int, int, bytes | None, bytes | None]] = []

    def report(err: Any, msg: Any) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

    for key, value, headers, partition in messages:
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": report}
        if headers is not None:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
        producer.poll(0)
    assert producer.flush(60) == 0
    return delivered


def lag(settings: Settings, group: str, topics: list[str]) -> int:
    """Records not yet committed by ``group`` (high watermark minus committed)."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group})
    try:
        total = 0
        for topic in topics:
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            tps = [TopicPartition(topic, p) for p in parts]
            for tp in consumer.committed(tps, timeout=10):
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
                total += high - max(tp.offset, 0)
        return total
    finally:
        consumer.close()


def wait_until(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


@contextmanager
def running(runner: SinkRunner) -> Iterator[SinkRunner]:
    """Run a sink in a thread; re-raise its error, if any, when the block ends."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"sink-{runner.sink.name}", daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(60)
        assert not thread.is_alive(), "the sink did not stop"
    if errors:
        raise errors[0]


def os_count(client: OpenSearch, alias: str) -> int:
    client.indices.refresh(index=alias)
    return int(client.count(index=alias)["count"])


def metric(counter: Any, **labels: str) -> float:
    value: float = counter.labels(**labels)._value.get()
    return value


def archived(store: ObjectStore, topic: str) -> dict[int, list[dict[str, Any]]]:
    """Every archived record of ``topic`` by partition, in key order (no dedupe)."""
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for key in store.list(f"{topic}/"):
        for record in read_records(store.get(key)):
            out[record["partition"]].append(record)
    return out


def assert_contiguous(store: ObjectStore, topic: str, partition: int, end: int) -> None:
    """Objects chain from offset 0 to ``end`` with neither a gap nor an overlap."""
    keys = store.list(f"{topic}/{partition:05d}/")
    expected = 0
    for key in keys:
        info = object_info(store, key)
        assert info.first_offset == expected, f"{key}: starts at {info.first_offset}"
        assert info.last_offset - info.first_offset + 1 == info.count + info.skipped_offsets
        expected = info.last_offset + 1
    assert expected == end, f"{topic}[{partition}] archived up to {expected}, log ends at {end}"


# -- OpenSearch ---------------------------------------------------------------------


def test_opensearch_sink_indexes_each_event_exactly_once(sink_settings: Settings) -> None:
    settings = sink_settings
    topic = settings.topics.enriched
    alias = settings.opensearch.events_index_prefix
    n = 5000
    events = [make_event() for _ in range(n)]
    messages: list[Message] = [
        (e["actor"]["id"].encode(), enriched_value(e, offset=i), None, i % 4)
        for i, e in enumerate(events)
    ]
    produce(settings, topic, messages)
    client = make_client(settings.opensearch)
    group = settings.groups.sink_opensearch
    topics = [topic, settings.topics.alerts]
    ok_before = metric(telemetry.EVENTS, stage="sink_opensearch", result="ok")
    dup_before = metric(telemetry.EVENTS, stage="sink_opensearch", result="duplicate")
    runner = opensearch_runner(settings)
    batch_s = telemetry.SINK_BATCH_SECONDS.labels(sink="opensearch")
    bulk_before = batch_s._sum.get()
    started = time.monotonic()
    with running(runner):
        wait_until("the first pass to be committed", lambda: lag(settings, group, topics) == 0)
        elapsed = time.monotonic() - started
        bulk_s = batch_s._sum.get() - bulk_before
        assert os_count(client, alias) == n
        indexed = metric(telemetry.EVENTS, stage="sink_opensearch", result="ok") - ok_before
        assert indexed == n
        print(
            f"\nopensearch sink: {n} docs in {elapsed:.1f} s end to end incl. start "
            f"({n / elapsed:.0f} docs/s); bulk requests {bulk_s:.2f} s ({n / bulk_s:.0f} docs/s)"
        )
        # The same records delivered again: 409 with the same hash, nothing new.
        produce(settings, topic, messages)
        wait_until("the replay to be committed", lambda: lag(settings, group, topics) == 0)
        assert os_count(client, alias) == n
        dups = metric(telemetry.EVENTS, stage="sink_opensearch", result="duplicate") - dup_before
        assert dups == n

    hit = client.search(index=alias, body={"query": {"term": {"event.id": events[0]["event_id"]}}})[
        "hits"
    ]["hits"][0]
    source = hit["_source"]
    day = events[0]["occurred_at"].strftime("%Y.%m.%d")
    assert hit["_index"] == f"{alias}-{day}"
    assert source["event"]["hash"] == content_hash(events[0])
    assert source["event"]["ingested"] >= source["event"]["created"]
    assert source["user"]["name"] == "ada@example.com"
    assert source["source"]["ip"] == "81.2.69.160"


def test_a_different_event_with_a_known_id_is_reported_not_overwritten(
    sink_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = sink_settings
    topic = settings.topics.enriched
    alias = settings.opensearch.events_index_prefix
    original = make_event()
    impostor = {**original, "action": "delete"}
    client = make_client(settings.opensearch)
    errors_before = metric(telemetry.EVENTS, stage="sink_opensearch", result="error")
    produce(settings, topic, [(None, enriched_value(original), None, 0)])
    group, topics = settings.groups.sink_opensearch, [topic, settings.topics.alerts]
    with (
        caplog.at_level(logging.ERROR, logger="pipeline.sinks.opensearch"),
        running(opensearch_runner(settings)),
    ):
        wait_until("the original to be indexed", lambda: lag(settings, group, topics) == 0)
        produce(settings, topic, [(None, enriched_value(impostor), None, 1)])
        wait_until("the impostor to be handled", lambda: lag(settings, group, topics) == 0)
    assert os_count(client, alias) == 1
    hit = client.search(index=alias, body={"query": {"match_all": {}}})["hits"]["hits"][0]
    assert hit["_source"]["event"]["action"] == "login"
    assert hit["_source"]["event"]["hash"] == content_hash(original)
    assert metric(telemetry.EVENTS, stage="sink_opensearch", result="error") - errors_before == 1
    assert f"event_id={original['event_id']}" in caplog.text
    assert content_hash(original) in caplog.text and content_hash(impostor) in caplog.text


def test_a_stale_alert_revision_never_overwrites_a_newer_one(sink_settings: Settings) -> None:
    settings = sink_settings
    topic = settings.topics.alerts
    last_seen = datetime.now(UTC).replace(microsecond=0)
    produce(
        settings,
        topic,
        [(b"alert-it-1", alert_value(2, last_seen), None, 0)],
    )
    group = settings.groups.sink_opensearch
    topics = [settings.topics.enriched, topic]
    client = make_client(settings.opensearch)
    alias = settings.opensearch.alerts_index_prefix
    with running(opensearch_runner(settings)):
        wait_until("revision 2", lambda: lag(settings, group, topics) == 0)
        produce(settings, topic, [(b"alert-it-1", alert_value(1, last_seen), None, 0)])
        wait_until("revision 1", lambda: lag(settings, group, topics) == 0)
    assert os_count(client, alias) == 1
    hit = client.search(index=alias, body={"query": {"match_all": {}}, "version": True})["hits"][
        "hits"
    ][0]
    assert hit["_version"] == 2
    assert hit["_source"]["auditstream"]["alert"]["revision"] == 2
    assert hit["_source"]["event"]["kind"] == "alert"


def test_opensearch_sink_says_when_opensearch_is_not_there(sink_settings: Settings) -> None:
    settings = _with(sink_settings, opensearch={"url": "http://127.0.0.1:9", "timeout_s": 1.0})
    args = type("Args", (), {"wait_s": 2.0})()
    with pytest.raises(Exception, match="did not answer within 2 s; is `auditstream stack up`"):
        opensearch_runner(settings, args)  # type: ignore[arg-type]


# -- the archive ----------------------------------------------------------------------


def _raw_messages(n: int, partitions: int) -> list[Message]:
    """Valid-looking and garbage values, null keys and values, headers."""
    out: list[Message] = []
    for i in range(n):
        if i % 10 == 0:
            value: bytes | None = bytes((i * 7 + j) % 256 for j in range(i % 50))  # garbage
        elif i % 37 == 0:
            value = None  # a tombstone
        else:
            value = enriched_value(make_event(), offset=i)  # any Avro bytes
        key = None if i % 3 == 0 else f"actor-{i % 17}".encode()
        headers = [("trace", f"t{i}".encode()), ("nil", None)] if i % 4 == 0 else None
        out.append((key, value, headers, i % partitions))
    return out


def _expected(delivered: list[tuple[int, int, bytes | None, bytes | None]]) -> dict[int, list[Any]]:
    by_part: dict[int, list[Any]] = defaultdict(list)
    for partition, offset, key, value in sorted(delivered):
        by_part[partition].append((offset, key, value))
    return by_part


def test_archive_keeps_every_raw_message_byte_for_byte(sink_settings: Settings) -> None:
    settings = sink_settings
    topic = settings.topics.input
    partitions = 4
    n = 20000
    messages = _raw_messages(n, partitions)
    delivered = produce(settings, topic, messages)
    # A committed and an aborted transaction on partition 0: the broker skips their markers
    # and aborted records, and the archive must say so.
    txn = Producer(
        {**settings.kafka.client_config(), "transactional.id": f"it-{uuid.uuid4().hex[:8]}"}
    )
    txn.init_transactions(30)
    txn.begin_transaction()
    committed_txn = [(b"txn", f"committed-{i}".encode()) for i in range(3)]
    for key, value in committed_txn:
        txn.produce(topic, key=key, value=value, partition=0)
    txn.commit_transaction(30)
    txn.begin_transaction()
    for i in range(2):
        txn.produce(topic, key=b"txn", value=f"aborted-{i}".encode(), partition=0)
    txn.flush(30)
    txn.abort_transaction(30)
    delivered += produce(settings, topic, [(b"after", b"after-abort", None, 0)])
    store = open_store(settings.archive)
    group = settings.groups.sink_archive
    topics = [topic, settings.topics.enriched, settings.topics.dead_letter, settings.topics.alerts]
    bytes_before = metric(telemetry.ARCHIVE_BYTES, topic=topic)
    batch_s = telemetry.SINK_BATCH_SECONDS.labels(sink="archive")
    write_before = batch_s._sum.get()
    started = time.monotonic()
    with running(archive_runner(settings)):
        wait_until("the archive to catch up", lambda: lag(settings, group, topics) == 0)
    elapsed = time.monotonic() - started
    write_s = batch_s._sum.get() - write_before
    written = metric(telemetry.ARCHIVE_BYTES, topic=topic) - bytes_before
    payload = sum(len(v or b"") for *_, v in delivered)
    print(
        f"\narchive sink: {n} records, {payload / 1e6:.2f} MB of values → "
        f"{written / 1e6:.2f} MB of objects in {elapsed:.1f} s end to end incl. start "
        f"({payload / 1e6 / elapsed:.2f} MB/s of values); writing objects took {write_s:.2f} s "
        f"({payload / 1e6 / write_s:.1f} MB/s of values)"
    )

    got = archived(store, topic)
    expected = _expected(delivered)
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "x"})
    try:
        for partition in range(settings.topics.partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high:
                assert_contiguous(store, topic, partition, high)
    finally:
        consumer.close()
    for partition in range(partitions):
        records = got[partition]
        offsets = [r["offset"] for r in records]
        assert offsets == sorted(set(offsets)), "repeated or unordered offsets"
        plain = [r for r in records if r["key"] != b"txn"]
        assert [(r["offset"], r["key"], r["value"]) for r in plain] == expected[partition]
        assert all(r["timestamp_type"] in ("create_time", "log_append_time") for r in plain)
    with_headers = [r for rs in got.values() for r in rs if r["headers"]]
    assert with_headers and all(
        r["headers"][0]["key"] == "trace" and r["headers"][1] == {"key": "nil", "value": None}
        for r in with_headers
    )
    txn_values = [r["value"] for r in got[0] if r["key"] == b"txn"]
    assert txn_values == [v for _, v in committed_txn]  # aborted ones never archived
    skipped = sum(object_info(store, k).skipped_offsets for k in store.list(f"{topic}/00000/"))
    assert skipped == 4  # 2 aborted records and 2 transaction markers


def test_a_zstandard_archive_holds_the_same_records(sink_settings: Settings) -> None:
    settings = _with(sink_settings, archive={"codec": "zstandard"})
    topic = settings.topics.input
    delivered = produce(settings, topic, _raw_messages(2000, 2))
    store = open_store(settings.archive)
    topics = [topic, settings.topics.enriched, settings.topics.dead_letter, settings.topics.alerts]
    with running(archive_runner(settings)):
        wait_until(
            "the archive to catch up",
            lambda: lag(settings, settings.groups.sink_archive, topics) == 0,
        )
    got = archived(store, topic)
    expected = _expected(delivered)
    for partition in (0, 1):
        keys = store.list(f"{topic}/{partition:05d}/")
        assert keys and all(b"zstandard" in store.get(k)[:512] for k in keys)
        records = [(r["offset"], r["key"], r["value"]) for r in got[partition]]
        assert records == expected[partition]


def _archive_complete(store: ObjectStore, topic: str, total: int) -> bool:
    count = 0
    for partition in range(4):
        head = archive_head(store, topic, partition)
        if head is not None:
            count += head.last_offset + 1
    return count >= total


def test_archive_sink_killed_and_restarted_loses_and_repeats_nothing(
    sink_settings: Settings, tmp_path: Path
) -> None:
    settings = _with(sink_settings, sink={"archive_max_records": 200, "archive_max_ms": 100})
    topic = settings.topics.input
    n = 20000
    delivered = produce(settings, topic, _raw_messages(n, 4))
    store = open_store(settings.archive)
    args = ("sink", "archive", "--instance-id", "archiver-1", "--session-timeout-ms", "6000")

    first = PipelineProcess(settings, *args, log_dir=tmp_path, name="archive-1").start()
    wait_until("a few objects", lambda: len(store.list(f"{topic}/")) >= 8, timeout=90)
    first.kill()
    killed_at = len(store.list(f"{topic}/"))
    # More traffic while it is down.
    delivered += produce(settings, topic, _raw_messages(2000, 4))
    second = PipelineProcess(settings, *args, log_dir=tmp_path, name="archive-2").start()
    wait_until("more objects", lambda: len(store.list(f"{topic}/")) >= killed_at + 8, timeout=90)
    second.kill()
    # A fresh group has no committed offsets at all: the archive alone says where to go on.
    fresh = _with(settings, groups={"sink_archive": settings.groups.sink_archive + "-fresh"})
    third = PipelineProcess(fresh, "sink", "archive", log_dir=tmp_path, name="archive-3").start()
    try:
        wait_until(
            "the archive to hold everything",
            lambda: _archive_complete(store, topic, len(delivered)),
            timeout=180,
        )
        assert third.running(), third.log_tail()
    finally:
        status = third.stop()
    assert status == 0, third.log_tail()

    got = archived(store, topic)
    expected = _expected(delivered)
    for partition in range(4):
        records = got[partition]
        assert [(r["offset"], r["key"], r["value"]) for r in records] == expected[partition]
        assert_contiguous(store, topic, partition, len(expected[partition]))


def test_s3_store_claims_once_and_the_sink_writes_locked_objects(sink_settings: Settings) -> None:
    settings = _with(sink_settings, archive={"backend": "s3"})
    store = open_store(settings.archive)
    assert isinstance(store, S3Store)
    key = f"claims/{settings.topics.input}/claim-test.avro"
    assert store.put_if_absent(key, b"first") is True
    assert store.put_if_absent(key, b"second") is False
    assert store.get(key) == b"first"
    assert store.get(key, max_bytes=2) == b"fi"
    assert store.object_lock is True

    topic = settings.topics.input
    delivered = produce(settings, topic, _raw_messages(300, 2))
    group = settings.groups.sink_archive
    topics = [topic, settings.topics.enriched, settings.topics.dead_letter, settings.topics.alerts]
    with running(archive_runner(settings)):
        wait_until("the archive to catch up", lambda: lag(settings, group, topics) == 0)
    got = archived(store, topic)
    expected = _expected(delivered)
    for partition in range(2):
        assert [(r["offset"], r["key"], r["value"]) for r in got[partition]] == expected[partition]
    objects = store.list(f"{topic}/")
    assert objects
    retention = store.client.get_object_retention(Bucket=store.bucket, Key=objects[0])
    assert retention["Retention"]["Mode"] == "COMPLIANCE"
    head = store.client.head_object(Bucket=store.bucket, Key=objects[0], ChecksumMode="ENABLED")
    assert head.get("ChecksumSHA256"), head


def test_an_opensearch_outage_pauses_the_sink_and_loses_nothing(
    local_stack: LocalStack, sink_settings: Settings
) -> None:
    settings = sink_settings
    topic = settings.topics.enriched
    alias = settings.opensearch.events_index_prefix
    group, topics = settings.groups.sink_opensearch, [topic, settings.topics.alerts]

    def batch_of(n: int) -> list[Message]:
        return [(None, enriched_value(make_event()), None, i % 4) for i in range(n)]

    produce(settings, topic, batch_of(200))
    client = make_client(settings.opensearch)
    retries = telemetry.SINK_RETRIES.labels(sink="opensearch")
    with running(opensearch_runner(settings)) as runner:
        wait_until("the first events", lambda: lag(settings, group, topics) == 0)
        before = retries._value.get()
        local_stack.kill_service("opensearch")
        try:
            produce(settings, topic, batch_of(300))
            wait_until("retries", lambda: retries._value.get() - before >= 2, timeout=60)
            assert lag(settings, group, topics) == 300  # nothing committed while it is down
            assert not runner.stopping
        finally:
            local_stack.start_service("opensearch")
        wait_until("the backlog", lambda: lag(settings, group, topics) == 0, timeout=120)
    assert os_count(client, alias) == 500


def test_templates_from_a_newer_version_also_extend_todays_existing_index(
    sink_settings: Settings,
) -> None:
    """Indices are per day: after an upgrade adds fields, today's index (made from the old
    template) must accept them too, or the sink would stop on the first new document."""
    from pipeline.sinks.opensearch import install_templates

    # A prefix no other test's template matches, so the old index really is old.
    prefix = f"upgrade-{uuid.uuid4().hex[:8]}-events"
    os_settings = sink_settings.opensearch.model_copy(update={"events_index_prefix": prefix})
    client = make_client(os_settings)
    index = f"{prefix}-2026.01.01"
    old_mapping = {
        "dynamic": "strict",
        "properties": {"@timestamp": {"type": "date"}, "event": {"properties": {}}},
    }
    # Today's index as an older version left it: made before this template existed.
    client.indices.create(index=index, body={"mappings": old_mapping})
    before = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert "auditstream" not in before
    install_templates(client, os_settings)
    mapping = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["auditstream"]["properties"]["resource"]["properties"]["sensitivity"]
    assert mapping["source"]["properties"]["geo"]["properties"]["location"]["type"] == "geo_point"
