"""Topic and consumer-group setup: what is wanted, and how Kafka errors are treated."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.errors import ConfigError, ServiceUnavailable, TransportError
from pipeline.settings import DAY_MS, Settings, TopicSettings
from pipeline.topics import (
    GroupOffsetReport,
    OffsetInit,
    TopicReport,
    _check_partitions,
    _retry,
    changelog_topics,
    group_reads,
    topic_configs,
    with_suffix,
)

SETTINGS = Settings(topics=TopicSettings(input_retention_ms=7 * DAY_MS))


def test_input_topic_keeps_log_append_time_and_its_retention() -> None:
    configs = topic_configs(SETTINGS)
    assert configs["access-events"] == {
        "retention.ms": str(7 * DAY_MS),
        "cleanup.policy": "delete",
        "message.timestamp.type": "LogAppendTime",
    }


def test_outputs_use_the_output_retention() -> None:
    configs = topic_configs(SETTINGS)
    assert list(configs) == [*SETTINGS.topics.all(), *changelog_topics(SETTINGS)]
    for name in SETTINGS.topics.outputs():
        assert configs[name] == {
            "retention.ms": str(SETTINGS.topics.output_retention_ms),
            "cleanup.policy": "delete",
        }


def test_table_changelogs_are_compacted_only_and_named_as_faust_names_them() -> None:
    configs = topic_configs(SETTINGS)
    assert changelog_topics(SETTINGS) == [
        "auditstream-worker-dedupe-changelog",
        "auditstream-worker-detect-users-changelog",
        "auditstream-worker-detect-ips-changelog",
    ]
    assert configs["auditstream-worker-dedupe-changelog"] == {"cleanup.policy": "compact"}


def test_each_group_reads_its_topics() -> None:
    t = SETTINGS.topics
    assert group_reads(SETTINGS) == {
        "auditstream-worker": [t.input, t.by_ip],
        "auditstream-sink-archive": [t.input, t.enriched, t.dead_letter, t.alerts],
        "auditstream-sink-opensearch": [t.enriched, t.alerts],
    }


def test_suffix_renames_every_topic_and_group_only() -> None:
    out = with_suffix(SETTINGS, "t1")
    assert out.topics.all() == [f"{n}-t1" for n in SETTINGS.topics.all()]
    assert set(group_reads(out)) == {f"{g}-t1" for g in group_reads(SETTINGS)}
    assert out.topics.partitions == SETTINGS.topics.partitions
    assert out.kafka == SETTINGS.kafka


def test_a_changed_partition_count_is_a_migration() -> None:
    with pytest.raises(ConfigError, match=r"access-events has 6 partitions .* migration"):
        _check_partitions(SETTINGS, {"access-events": 6})
    _check_partitions(SETTINGS, {"access-events": 12, "other": 3})


def test_reports_say_what_changed() -> None:
    report = TopicReport(created=["a"], updated={"b": {"retention.ms": "1"}}, unchanged=["c"])
    assert report.lines() == [
        "created topic a",
        "updated topic b: retention.ms=1",
        "topic c already as configured",
    ]
    groups = GroupOffsetReport(
        initialized=[OffsetInit("g", "a", 0, 0), OffsetInit("g", "a", 1, 5)], kept={"h": 3}
    )
    assert groups.lines() == [
        "group g: set 2 partition(s) of a to their earliest offset",
        "group h: 3 partition(s) already committed, left alone",
    ]


def _failing(codes: list[int]) -> Callable[[], str]:
    remaining = list(codes)

    def call() -> str:
        if remaining:
            raise KafkaException(KafkaError(remaining.pop(0)))
        return "ok"

    return call


def test_transient_errors_are_retried() -> None:
    call = _failing([KafkaError._TRANSPORT, KafkaError.COORDINATOR_LOAD_IN_PROGRESS])
    assert _retry("listing", call, SETTINGS, deadline=float("inf")) == "ok"


def test_transient_errors_past_the_deadline_mean_unavailable() -> None:
    call = _failing([KafkaError._TRANSPORT] * 100)
    with pytest.raises(ServiceUnavailable, match="did not answer"):
        _retry("listing", call, SETTINGS, deadline=0.0)


def test_refusals_are_config_errors_and_others_transport_errors() -> None:
    with pytest.raises(ConfigError, match="refused"):
        _retry("creating", _failing([KafkaError.INVALID_REPLICATION_FACTOR]), SETTINGS, 0.0)
    with pytest.raises(TransportError):
        _retry("creating", _failing([KafkaError.INVALID_REQUEST]), SETTINGS, 0.0)
