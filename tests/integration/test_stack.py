"""The local stack and the topics setup, against the real services."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from opensearchpy import OpenSearch

from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.stack import LocalStack
from pipeline.stack.objectstore import s3_client
from pipeline.topics import (
    changelog_topics,
    ensure_group_offsets,
    ensure_topics,
    group_reads,
    with_suffix,
)
from tests.integration.conftest import unique_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka.client_config())


def _committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=15)}
    finally:
        consumer.close()


def _s3(settings: Settings) -> S3Client:
    archive = settings.archive
    assert archive.s3_endpoint and archive.s3_access_key and archive.s3_secret_key
    return s3_client(
        archive.s3_endpoint,
        archive.s3_access_key.get_secret_value(),
        archive.s3_secret_key.get_secret_value(),
        archive.s3_region,
    )


def test_status_reports_every_service_healthy(local_stack: LocalStack) -> None:
    rows = local_stack.status()
    assert [r.name for r in rows] == ["kafka", "opensearch", "s3"]
    assert all(r.healthy and r.pid for r in rows), rows
    assert all(r.log.exists() for r in rows)


def test_kafka_round_trips_a_message(stack_settings: Settings) -> None:
    settings = unique_settings(stack_settings, f"smoke-{uuid.uuid4().hex[:6]}")
    topic = settings.topics.input
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    producer.produce(topic, key=b"actor-1", value=b"hello")
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"smoke-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        message = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.value() == b"hello"
        kind, _ = message.timestamp()
        assert kind == 2  # TIMESTAMP_LOG_APPEND_TIME on the input topic
    finally:
        consumer.close()


def test_opensearch_indexes_and_gets_a_document(stack_settings: Settings) -> None:
    client = OpenSearch(hosts=[stack_settings.opensearch.url])
    index = f"stack-smoke-{uuid.uuid4().hex[:8]}"
    client.index(index=index, id="1", body={"event": {"action": "login"}}, refresh=True)
    assert client.get(index=index, id="1")["_source"] == {"event": {"action": "login"}}
    client.indices.delete(index=index)


def test_object_store_keeps_objects_in_a_locked_bucket(stack_settings: Settings) -> None:
    s3 = _s3(stack_settings)
    bucket = stack_settings.archive.s3_bucket
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    key = f"smoke/{uuid.uuid4().hex}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"record of truth")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"record of truth"


def test_topics_have_partitions_retention_and_log_append_time(stack_settings: Settings) -> None:
    settings = unique_settings(stack_settings, f"cfg-{uuid.uuid4().hex[:6]}")
    admin = _admin(settings)
    metadata = admin.list_topics(timeout=15)
    topics = settings.topics
    for name in topics.all():
        assert len(metadata.topics[name].partitions) == topics.partitions
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in topics.all()]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    assert configs[topics.input]["retention.ms"].value == str(topics.input_retention_ms)
    assert configs[topics.input]["message.timestamp.type"].value == "LogAppendTime"
    for name in topics.outputs():
        assert configs[name]["retention.ms"].value == str(topics.output_retention_ms)
        assert configs[name]["message.timestamp.type"].value == "CreateTime"
    assert all(c["cleanup.policy"].value == "delete" for c in configs.values())
    changelogs = [ConfigResource(ResourceType.TOPIC, name) for name in changelog_topics(settings)]
    for future in admin.describe_configs(changelogs).values():
        assert future.result()["cleanup.policy"].value == "compact"


def test_ensure_topics_twice_changes_nothing(stack_settings: Settings) -> None:
    settings = unique_settings(stack_settings, f"idem-{uuid.uuid4().hex[:6]}")
    report = ensure_topics(settings)
    assert report.created == [] and report.updated == {}
    assert sorted(report.unchanged) == sorted([*settings.topics.all(), *changelog_topics(settings)])


def test_ensure_topics_restores_a_drifted_retention(stack_settings: Settings) -> None:
    settings = unique_settings(stack_settings, f"drift-{uuid.uuid4().hex[:6]}")
    admin = _admin(settings)
    topic = settings.topics.enriched
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result()
    report = ensure_topics(settings)
    assert report.updated == {topic: {"retention.ms": str(settings.topics.output_retention_ms)}}


def test_groups_start_at_the_low_watermark_once(stack_settings: Settings) -> None:
    settings = with_suffix(stack_settings, f"grp-{uuid.uuid4().hex[:6]}")
    ensure_topics(settings)
    producer = Producer(settings.kafka.client_config())
    for i in range(5):
        producer.produce(settings.topics.input, value=b"x%d" % i, partition=0)
    assert producer.flush(30) == 0
    admin = _admin(settings)
    for future in admin.delete_records([TopicPartition(settings.topics.input, 0, 3)]).values():
        future.result()

    first = ensure_group_offsets(settings)
    reads = group_reads(settings)
    parts = settings.topics.partitions
    assert len(first.initialized) == sum(len(t) for t in reads.values()) * parts
    worker = settings.groups.worker
    committed = _committed(settings, worker, settings.topics.input)
    assert committed[0] == 3 and all(committed[p] == 0 for p in range(1, parts))

    consumer = Consumer({**settings.kafka.client_config(), "group.id": worker})
    consumer.commit(offsets=[TopicPartition(settings.topics.input, 0, 5)], asynchronous=False)
    consumer.close()
    again = ensure_group_offsets(settings)
    assert again.initialized == []
    assert again.kept == {group: len(t) * parts for group, t in reads.items()}
    assert _committed(settings, worker, settings.topics.input)[0] == 5


def test_changed_partition_count_is_a_config_error(stack_settings: Settings) -> None:
    settings = unique_settings(stack_settings, f"parts-{uuid.uuid4().hex[:6]}")
    more = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"partitions": 13})}
    )
    with pytest.raises(ConfigError, match="migration to a new topic"):
        ensure_topics(more)


def test_stack_up_when_up_starts_nothing(local_stack: LocalStack) -> None:
    before = {r.name: r.pid for r in local_stack.status()}
    again = LocalStack(local_stack.settings)
    assert again.up() == []
    assert {r.name: r.pid for r in again.status()} == before


def test_a_killed_service_starts_again(local_stack: LocalStack) -> None:
    assert local_stack.kill_service("s3")
    assert not local_stack.s3.status().running
    assert local_stack.start_service("s3")
    status = local_stack.s3.status()
    assert status.healthy, status
