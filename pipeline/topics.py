"""``auditstream topics``: create the pipeline's topics and start its groups at the earliest offset.

Works against any Kafka cluster the settings point at. Topics get explicit
retention and ``cleanup.policy=delete``; the input topic takes
``LogAppendTime``. Every pipeline consumer group gets, once, the low watermark
as its committed offset on every partition it reads that has no commit yet, so
the worker and sinks can run with ``auto.offset.reset=none`` semantics.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not re-exported for mypy
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from pipeline.errors import ConfigError, ServiceUnavailable, TransportError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

RETRY_DEADLINE_S = 60.0
REQUEST_TIMEOUT_S = 15.0
TOPIC_FIELDS = ("input", "by_ip", "enriched", "dead_letter", "alerts")
GROUP_FIELDS = ("worker", "sink_opensearch", "sink_archive")
WORKER_TABLES = ("dedupe", "detect-users", "detect-ips")

_TRANSIENT = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._WAIT_COORD,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.NOT_CONTROLLER,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}
_OPERATOR_ERRORS = {
    KafkaError.INVALID_REPLICATION_FACTOR,
    KafkaError.INVALID_PARTITIONS,
    KafkaError.INVALID_CONFIG,
    KafkaError.POLICY_VIOLATION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}
_GROUP_ACTIVE = {
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.GROUP_SUBSCRIBED_TO_TOPIC,
}

T = TypeVar("T")


@dataclass
class TopicReport:
    """What ``ensure_topics`` did."""

    created: list[str] = field(default_factory=list)
    updated: dict[str, dict[str, str]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"created topic {t}" for t in self.created]
        for topic, changes in self.updated.items():
            pairs = ", ".join(f"{k}={v}" for k, v in sorted(changes.items()))
            out.append(f"updated topic {topic}: {pairs}")
        out += [f"topic {t} already as configured" for t in self.unchanged]
        return out


@dataclass(frozen=True)
class OffsetInit:
    group: str
    topic: str
    partition: int
    offset: int


@dataclass
class GroupOffsetReport:
    """What ``ensure_group_offsets`` did: offsets set, and partitions left alone."""

    initialized: list[OffsetInit] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out: list[str] = []
        by_group: dict[tuple[str, str], list[OffsetInit]] = {}
        for init in self.initialized:
            by_group.setdefault((init.group, init.topic), []).append(init)
        for (group, topic), inits in by_group.items():
            out.append(
                f"group {group}: set {len(inits)} partition(s) of {topic} to their earliest offset"
            )
        out += [
            f"group {group}: {count} partition(s) already committed, left alone"
            for group, count in self.kept.items()
            if count
        ]
        return out


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """The topic-level configs each pipeline topic must have, by topic name."""
    topics = settings.topics
    output = {"retention.ms": str(topics.output_retention_ms), "cleanup.policy": "delete"}
    configs = {name: dict(output) for name in topics.outputs()}
    configs[topics.input] = {
        "retention.ms": str(topics.input_retention_ms),
        "cleanup.policy": "delete",
        "message.timestamp.type": "LogAppendTime",
    }
    ordered = {name: configs[name] for name in topics.all()}
    # Faust's table changelogs: compacted only, never deleted by age (a deleted
    # head crashes recovery), one partition per input partition.
    for name in changelog_topics(settings):
        ordered[name] = {"cleanup.policy": "compact"}
    return ordered


def changelog_topics(settings: Settings) -> list[str]:
    """The worker's table changelog topics, named as Faust names them."""
    return [f"{settings.groups.worker}-{table}-changelog" for table in WORKER_TABLES]


def group_reads(settings: Settings) -> dict[str, list[str]]:
    """Every pipeline consumer group and the topics it reads."""
    t, g = settings.topics, settings.groups
    return {
        g.worker: [t.input, t.by_ip],
        g.sink_archive: [t.input, t.enriched, t.dead_letter, t.alerts],
        g.sink_opensearch: [t.enriched, t.alerts],
    }


def with_suffix(settings: Settings, suffix: str) -> Settings:
    """Settings whose topic names and group ids end in ``-<suffix>`` (isolated namespaces)."""
    topics = settings.topics.model_copy(
        update={f: f"{getattr(settings.topics, f)}-{suffix}" for f in TOPIC_FIELDS}
    )
    groups = settings.groups.model_copy(
        update={f: f"{getattr(settings.groups, f)}-{suffix}" for f in GROUP_FIELDS}
    )
    return settings.model_copy(update={"topics": topics, "groups": groups})


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(
        settings.kafka.client_config(), logger=logging.getLogger(f"{__name__}.librdkafka")
    )


def _retry(what: str, call: Callable[[], T], settings: Settings, deadline: float) -> T:
    """Run ``call``, retrying transient Kafka errors with backoff until ``deadline``."""
    bootstrap = settings.kafka.bootstrap_servers
    delay = 0.2
    while True:
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError):
                raise TransportError(f"{what} at Kafka {bootstrap} failed: {exc}") from exc
            if err.code() in _OPERATOR_ERRORS:
                raise ConfigError(f"{what} at Kafka {bootstrap} was refused: {err.str()}") from exc
            if not (err.retriable() or err.code() in _TRANSIENT):
                raise TransportError(f"{what} at Kafka {bootstrap} failed: {err.str()}") from exc
            if time.monotonic() + delay > deadline:
                raise ServiceUnavailable(
                    f"Kafka at {bootstrap} did not answer ({what}) in time: {err.str()}; "
                    "is it running (`auditstream stack up`) and reachable?"
                ) from exc
            log.info("%s: %s; retrying in %.1f s", what, err.str(), delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _partition_counts(admin: AdminClient, settings: Settings, deadline: float) -> dict[str, int]:
    def call() -> dict[str, int]:
        metadata = admin.list_topics(timeout=REQUEST_TIMEOUT_S)
        counts: dict[str, int] = {}
        for name, meta in metadata.topics.items():
            if meta.error is not None and meta.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaException(meta.error)
            if meta.error is None:
                counts[name] = len(meta.partitions)
        return counts

    return _retry("listing topics", call, settings, deadline)


def _check_partitions(settings: Settings, counts: dict[str, int]) -> None:
    want = settings.topics.partitions
    for topic in [*settings.topics.all(), *changelog_topics(settings)]:
        have = counts.get(topic)
        if have is not None and have != want:
            raise ConfigError(
                f"topic {topic} has {have} partitions but topics.partitions is {want}; a topic's "
                "partition count is fixed at creation (keys map to partitions, Faust's changelogs "
                "must match): changing it is a migration to a new topic, not an edit. Set "
                f"AUDITSTREAM_TOPICS__PARTITIONS={have}, or migrate to a new topic name"
            )


def _create(admin: AdminClient, settings: Settings, topic: str, config: dict[str, str]) -> bool:
    new = NewTopic(
        topic,
        num_partitions=settings.topics.partitions,
        replication_factor=settings.topics.replication_factor,
        config=config,
    )
    future = admin.create_topics(
        [new], operation_timeout=REQUEST_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S
    )[topic]
    try:
        future.result()
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise
    return True


def _config_drift(admin: AdminClient, topic: str, want: dict[str, str]) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource], request_timeout=REQUEST_TIMEOUT_S)[
        resource
    ].result()
    return {k: v for k, v in want.items() if k not in entries or entries[k].value != v}


def _alter(admin: AdminClient, topic: str, changes: dict[str, str]) -> None:
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in changes.items()
        ],
    )
    admin.incremental_alter_configs([resource], request_timeout=REQUEST_TIMEOUT_S)[
        resource
    ].result()


def ensure_topics(settings: Settings, *, deadline_s: float = RETRY_DEADLINE_S) -> TopicReport:
    """Create missing topics; check partition counts and set retention/timestamp configs."""
    admin = _admin(settings)
    deadline = time.monotonic() + deadline_s
    wanted = topic_configs(settings)
    counts = _partition_counts(admin, settings, deadline)
    _check_partitions(settings, counts)
    report = TopicReport()
    for topic, config in wanted.items():
        if topic not in counts:
            created = _retry(
                f"creating topic {topic}",
                partial(_create, admin, settings, topic, config),
                settings,
                deadline,
            )
            if created:
                log.debug("created topic %s", topic)
                report.created.append(topic)
                continue
            _check_partitions(settings, _partition_counts(admin, settings, deadline))
        drift = _retry(
            f"reading the configs of {topic}",
            partial(_config_drift, admin, topic, config),
            settings,
            deadline,
        )
        if drift:
            _retry(
                f"updating the configs of {topic}",
                partial(_alter, admin, topic, drift),
                settings,
                deadline,
            )
            log.debug("updated topic %s: %s", topic, drift)
            report.updated[topic] = drift
        else:
            report.unchanged.append(topic)
    if report.created:
        _wait_until_led(admin, settings, report.created, deadline)
    return report


def _wait_until_led(
    admin: AdminClient, settings: Settings, topics: list[str], deadline: float
) -> None:
    """Wait until new topics show in metadata with every partition led (creation is async)."""
    want = settings.topics.partitions
    while True:
        metadata = _retry(
            "listing topics",
            partial(admin.list_topics, timeout=REQUEST_TIMEOUT_S),
            settings,
            deadline,
        )
        pending = [
            t
            for t in topics
            if t not in metadata.topics
            or len(metadata.topics[t].partitions) != want
            or any(p.leader < 0 for p in metadata.topics[t].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"Kafka at {settings.kafka.bootstrap_servers} created {', '.join(pending)} "
                "but gave them no partition leaders in time; check the broker's log"
            )
        time.sleep(0.2)


def _committed(
    settings: Settings, group: str, partitions: list[TopicPartition]
) -> list[TopicPartition]:
    """The group's committed offsets (negative where none), read through a Consumer.

    Not ``AdminClient.list_consumer_group_offsets``: librdkafka 2.16 dereferences a
    null consumer group there on a coordinator error (e.g. a broker just started)
    and crashes the process. A consumer that never subscribes does not join the group.
    """
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
        },
        logger=logging.getLogger(f"{__name__}.librdkafka"),
    )
    try:
        found: list[TopicPartition] = consumer.committed(partitions, timeout=REQUEST_TIMEOUT_S)
    finally:
        consumer.close()
    for tp in found:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return found


def _earliest(admin: AdminClient, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
    request = {TopicPartition(tp.topic, tp.partition): OffsetSpec.earliest() for tp in partitions}  # type: ignore[no-untyped-call]
    futures = admin.list_offsets(request, request_timeout=REQUEST_TIMEOUT_S)
    return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}


def _commit(admin: AdminClient, group: str, offsets: list[TopicPartition]) -> None:
    request = ConsumerGroupTopicPartitions(group, offsets)
    result = admin.alter_consumer_group_offsets([request], request_timeout=REQUEST_TIMEOUT_S)
    try:
        done = result[group].result()
    except KafkaException as exc:
        _raise_if_active(group, exc.args[0] if exc.args else None)
        raise
    for tp in done.topic_partitions:
        if tp.error is not None:
            _raise_if_active(group, tp.error)
            raise KafkaException(tp.error)


def _raise_if_active(group: str, err: object) -> None:
    if isinstance(err, KafkaError) and err.code() in _GROUP_ACTIVE:
        raise ConfigError(
            f"consumer group {group} has active members but no committed offset on some "
            f"partitions it reads ({err.str()}); stop its consumers and run `auditstream topics` "
            "again"
        )


def ensure_group_offsets(
    settings: Settings, *, deadline_s: float = RETRY_DEADLINE_S
) -> GroupOffsetReport:
    """Commit the low watermark for every group/partition that has no commit; never move one."""
    admin = _admin(settings)
    deadline = time.monotonic() + deadline_s
    counts = _partition_counts(admin, settings, deadline)
    report = GroupOffsetReport()
    for group, topics in group_reads(settings).items():
        missing = [t for t in topics if t not in counts]
        if missing:
            raise ConfigError(
                f"topics {', '.join(missing)} read by group {group} do not exist; "
                "run `auditstream topics` to create them"
            )
        partitions = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
        committed = _retry(
            f"reading the offsets of group {group}",
            partial(_committed, settings, group, partitions),
            settings,
            deadline,
        )
        absent = [tp for tp in committed if tp.offset < 0]
        report.kept[group] = len(committed) - len(absent)
        if not absent:
            continue
        earliest = _retry(
            "reading the earliest offsets",
            partial(_earliest, admin, absent),
            settings,
            deadline,
        )
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(earliest.items())]
        _retry(
            f"committing the earliest offsets of group {group}",
            partial(_commit, admin, group, offsets),
            settings,
            deadline,
        )
        report.initialized += [
            OffsetInit(group, tp.topic, tp.partition, tp.offset) for tp in offsets
        ]
        log.debug("group %s: set %d partition(s) to earliest", group, len(offsets))
    return report


def run(args: argparse.Namespace, settings: Settings) -> int:
    print(f"Kafka at {settings.kafka.bootstrap_servers}:")
    for line in ensure_topics(settings).lines():
        print(f"  {line}")
    if not args.no_groups:
        for line in ensure_group_offsets(settings).lines():
            print(f"  {line}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "topics",
        help="create the pipeline's topics and start its consumer groups at the earliest offset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--no-groups",
        action="store_true",
        help="only create and check topics; leave consumer group offsets alone",
    )
    parser.set_defaults(func=run)
