"""The sink contract and the one loop that drives every sink.

Modelled on Kafka Connect's ``SinkTask``: a sink implements :meth:`Sink.open`
(partitions assigned; it may say where to start), :meth:`Sink.write` (make a
batch durable, or raise :class:`TransportError` to have it retried),
:meth:`Sink.pre_commit` (which offsets are safe to commit) and
:meth:`Sink.close` (partitions revoked). :class:`SinkRunner` does the rest,
once for all sinks (DESIGN, Accounting and Backpressure):

- consume a batch of up to ``batch_max_records`` records or ``batch_max_ms``
  after its first record, from a consumer in the sink's own group with manual
  commits, ``read_committed`` and ``auto.offset.reset=error``;
- write it; only after success commit ``last offset + 1`` per partition;
- on a transport error, pause the assigned partitions, keep polling so the
  group membership holds, retry with exponential backoff and jitter, resume
  after success: a batch is never dropped, only dropped when its partitions
  are revoked (it is consumed again by whoever gets them);
- anything else stops the process with a non-zero status.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import BaseModel, ConfigDict, Field

from pipeline import telemetry
from pipeline.errors import AuditstreamError, TransportError

log = logging.getLogger(__name__)

TP = tuple[str, int]
"""A topic-partition: ``(topic, partition)``."""

TIMESTAMP_TYPES = ("not_available", "create_time", "log_append_time")


class SinkError(AuditstreamError):
    """A sink cannot go on: the consumer lost its position, or a record shows a bug."""


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record exactly as consumed."""

    topic: str
    partition: int
    offset: int
    timestamp_type: int  # 0 not available, 1 create time, 2 log append time
    timestamp: int  # milliseconds since the epoch (-1 when not available)
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)

    @property
    def ref(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

    @classmethod
    def from_message(cls, message: Any) -> Record:
        ts_type, ts = message.timestamp()
        headers = message.headers() or ()
        return cls(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            timestamp_type=ts_type,
            timestamp=ts,
            key=message.key(),
            value=message.value(),
            headers=tuple((str(k), v) for k, v in headers),
        )


@dataclass
class Batch:
    """Records consumed together, in consumption order (per partition: offset order).

    ``settled`` holds the records (by :attr:`Record.ref`) that a previous
    attempt already made durable, so a retry redoes only the rest and counts
    nothing twice.
    """

    records: list[Record] = field(default_factory=list)
    settled: set[tuple[str, int, int]] = field(default_factory=set)
    attempts: int = 0

    def __len__(self) -> int:
        return len(self.records)

    def by_partition(self) -> dict[TP, list[Record]]:
        parts: dict[TP, list[Record]] = {}
        for record in self.records:
            parts.setdefault(record.tp, []).append(record)
        return parts

    def pending(self) -> list[Record]:
        return [r for r in self.records if r.ref not in self.settled]

    def settle(self, records: Iterable[Record]) -> None:
        self.settled.update(r.ref for r in records)

    def next_offsets(self) -> dict[TP, int]:
        """Per partition, the offset after the last record: what is committed after a write."""
        offsets: dict[TP, int] = {}
        for record in self.records:
            offsets[record.tp] = max(offsets.get(record.tp, 0), record.offset + 1)
        return offsets

    def drop(self, partitions: Iterable[TP]) -> int:
        gone = set(partitions)
        before = len(self.records)
        self.records = [r for r in self.records if r.tp not in gone]
        self.settled = {ref for ref in self.settled if (ref[0], ref[1]) not in gone}
        return before - len(self.records)


class Sink(ABC):
    """What one sink implements; :class:`SinkRunner` calls it from one thread."""

    #: label for metrics: ``sink`` = name, ``stage`` = ``sink_<name>``
    name: str = "sink"
    #: where a partition without a committed offset (and no start from :meth:`open`)
    #: begins: ``error`` stops the process (DESIGN: no silent skips), ``earliest``
    #: starts at the oldest record Kafka still has.
    uncommitted_start: Literal["error", "earliest"] = "error"

    @property
    def stage(self) -> str:
        return f"sink_{self.name}"

    def open(self, partitions: Sequence[TP]) -> Mapping[TP, int]:
        """Partitions were assigned; return explicit start offsets for some of them.

        Partitions left out start at the group's committed offset.
        """
        return {}

    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Make every record of ``batch`` durable, or raise :class:`TransportError` to retry.

        Any other exception stops the process without committing the batch.
        """

    def pre_commit(self, offsets: Mapping[TP, int]) -> dict[TP, int]:
        """After a successful write: the offsets to commit and to continue from.

        ``offsets`` is ``last + 1`` per partition of the batch. A sink that
        found part of its output already written by someone else (the archive
        adopting an object) returns where that output ends instead; the runner
        commits it and seeks there.
        """
        return dict(offsets)

    def close(self, partitions: Sequence[TP]) -> None:  # noqa: B027 - optional hook
        """Partitions were revoked or lost; forget their state."""


class SinkLoopConfig(BaseModel):
    """How a :class:`SinkRunner` consumes, batches and retries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: str
    topics: list[str] = Field(min_length=1)
    batch_max_records: int = Field(2000, ge=1)
    batch_max_ms: int = Field(1000, ge=1)
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    session_timeout_ms: int = Field(10_000, ge=1000)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    instance_id: str | None = None  # static group membership when set
    idle_poll_s: float = Field(0.5, gt=0)


class ConsumerLike(Protocol):
    """The part of ``confluent_kafka.Consumer`` the runner uses (a fake in unit tests)."""

    def subscribe(self, topics: list[str], **callbacks: Any) -> None: ...
    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Any]: ...
    def poll(self, timeout: float = ...) -> Any: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def assignment(self) -> list[TopicPartition]: ...
    def committed(self, partitions: list[TopicPartition], timeout: float = ...) -> Any: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def commit(self, *args: Any, **kwargs: Any) -> Any: ...
    def close(self) -> None: ...


def consumer_config(kafka: Mapping[str, Any], loop: SinkLoopConfig) -> dict[str, Any]:
    """librdkafka properties of a sink's consumer."""
    conf = dict(kafka)
    conf.update(
        {
            "group.id": loop.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # A missing or out-of-range offset is an error the runner reports, never a jump.
            "auto.offset.reset": "error",
            "isolation.level": "read_committed",
            "session.timeout.ms": loop.session_timeout_ms,
            "heartbeat.interval.ms": max(1000, loop.session_timeout_ms // 5),
            "max.poll.interval.ms": loop.max_poll_interval_ms,
            "enable.partition.eof": False,
            "allow.auto.create.topics": False,
        }
    )
    if loop.instance_id:
        conf["group.instance.id"] = loop.instance_id
    return conf


def backoff_delays(
    initial: float, maximum: float, rng: Callable[[], float] = random.random
) -> Iterable[float]:
    """Exponential backoff with jitter: each delay in [d/2, d], d doubling up to ``maximum``."""
    delay = initial
    while True:
        yield delay * (0.5 + rng() / 2)
        delay = min(maximum, delay * 2)


class SinkRunner:
    """Consumes, batches, writes through a :class:`Sink`, commits; one per process."""

    def __init__(
        self,
        sink: Sink,
        loop: SinkLoopConfig,
        kafka: Mapping[str, Any],
        *,
        consumer_factory: Callable[[dict[str, Any]], ConsumerLike] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.loop = loop
        self._conf = consumer_config(kafka, loop)
        self._conf["error_cb"] = self._on_error
        self._factory: Callable[[dict[str, Any]], ConsumerLike] = (
            consumer_factory or _kafka_consumer
        )
        self._clock = clock
        self._stop = threading.Event()
        self._batch = Batch()
        self._carry: list[Record] = []  # consumed while paused; heads the next batch
        self._paused = False
        self._consumer: ConsumerLike | None = None
        self._fatal: BaseException | None = None

    # -- control -------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end: the current batch is finished if it is being written,
        otherwise dropped uncommitted; then the consumer leaves the group."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        consumer = self._factory(self._conf)
        self._consumer = consumer
        consumer.subscribe(
            list(self.loop.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info(
            "%s: consuming %s in group %s",
            self.sink.name,
            ", ".join(self.loop.topics),
            self.loop.group_id,
        )
        try:
            while not self._stop.is_set():
                if self._collect(consumer):
                    self._deliver(consumer)
            self._raise_fatal()
        except AuditstreamError as exc:
            log.error("%s: stopping: %s", self.sink.name, exc)
            raise
        except Exception:
            log.exception("%s: stopping on an unexpected error", self.sink.name)
            raise
        finally:
            if self._batch.records:
                log.info(
                    "%s: dropping %d uncommitted records on stop; they are consumed again",
                    self.sink.name,
                    len(self._batch),
                )
            self._batch = Batch()
            self._carry = []
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("%s: closing the consumer: %s", self.sink.name, exc)
        log.info("%s: stopped", self.sink.name)
        return 0

    # -- batching ------------------------------------------------------------

    def _collect(self, consumer: ConsumerLike) -> bool:
        """Fill ``self._batch``; True when it should be written now."""
        if self._carry:
            self._batch.records.extend(self._carry)
            self._carry = []
        deadline = self._clock() + self.loop.batch_max_ms / 1000 if self._batch.records else None
        while not self._stop.is_set():
            room = self.loop.batch_max_records - len(self._batch)
            if room <= 0:
                return True
            if deadline is None:
                timeout = self.loop.idle_poll_s
            else:
                timeout = deadline - self._clock()
                if timeout <= 0:
                    return True
            messages = consumer.consume(num_messages=room, timeout=timeout)
            self._raise_fatal()
            for message in messages:
                record = self._record(message)
                if record is not None:
                    self._batch.records.append(record)
            if deadline is None and self._batch.records:
                deadline = self._clock() + self.loop.batch_max_ms / 1000
        return False

    def _record(self, message: Any) -> Record | None:
        err = message.error()
        if err is None:
            return Record.from_message(message)
        where = f"{message.topic()}[{message.partition()}]"
        code = err.code()
        if code == KafkaError._AUTO_OFFSET_RESET or code == KafkaError.OFFSET_OUT_OF_RANGE:
            raise SinkError(
                f"{self.sink.name}: no valid position for {where} in group "
                f"{self.loop.group_id} ({err.str()}); the records there are gone or the group "
                "was never set up. Nothing was skipped: run `auditstream topics` to start a "
                "new group at the earliest offset, or reset the group deliberately"
            )
        if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
            raise SinkError(
                f"{self.sink.name}: topic {message.topic()} does not exist; "
                "run `auditstream topics` (or `auditstream stack up`) to create it"
            )
        if err.fatal() or not err.retriable():
            raise SinkError(f"{self.sink.name}: consumer error on {where}: {err.str()}")
        log.warning(
            "%s: consumer error on %s (retried by the client): %s", self.sink.name, where, err.str()
        )
        return None

    # -- writing -------------------------------------------------------------

    def _deliver(self, consumer: ConsumerLike) -> None:
        batch = self._batch
        delays = iter(backoff_delays(self.loop.retry_initial_s, self.loop.retry_max_s))
        try:
            while batch.records:
                if self._stop.is_set() and batch.attempts > 0:
                    return  # stopping while retrying: drop uncommitted
                batch.attempts += 1
                started = self._clock()
                try:
                    self.sink.write(batch)
                except TransportError as exc:
                    telemetry.SINK_RETRIES.labels(sink=self.sink.name).inc()
                    delay = next(delays)
                    log.warning(
                        "%s: writing %d records failed (attempt %d), retrying in %.1f s: %s",
                        self.sink.name,
                        len(batch.pending()),
                        batch.attempts,
                        delay,
                        exc,
                    )
                    self._pause(consumer)
                    self._wait(consumer, delay)
                    continue
                telemetry.SINK_BATCH_SECONDS.labels(sink=self.sink.name).observe(
                    self._clock() - started
                )
                self._commit(consumer, batch)
                self._batch = Batch()
                return
        finally:
            if self._batch is batch and not batch.records:
                self._batch = Batch()
            self._resume(consumer)

    def _commit(self, consumer: ConsumerLike, batch: Batch) -> None:
        natural = batch.next_offsets()
        offsets = self.sink.pre_commit(natural)
        if not offsets:
            return
        for tp, offset in offsets.items():
            if offset != natural.get(tp):
                log.info("%s: continuing %s[%d] at offset %d", self.sink.name, tp[0], tp[1], offset)
                consumer.seek(TopicPartition(tp[0], tp[1], offset))
                # Anything read ahead of the seek is delivered again from the new position.
                self._carry = [r for r in self._carry if r.tp != tp]
        try:
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())],
                asynchronous=False,
            )
        except KafkaException as exc:
            # The batch is durable and every sink is idempotent: a lost commit only means
            # these records may be seen again after a restart or rebalance.
            log.warning("%s: commit failed (records may be re-read): %s", self.sink.name, exc)

    def _pause(self, consumer: ConsumerLike) -> None:
        if not self._paused:
            consumer.pause(consumer.assignment())
            self._paused = True

    def _resume(self, consumer: ConsumerLike) -> None:
        if self._paused:
            self._paused = False
            consumer.resume(consumer.assignment())

    def _wait(self, consumer: ConsumerLike, seconds: float) -> None:
        """Sleep while polling, so the group membership holds and rebalances are served."""
        end = self._clock() + seconds
        while not self._stop.is_set() and self._batch.records:
            left = end - self._clock()
            if left <= 0:
                return
            message = consumer.poll(min(left, 0.2))
            self._raise_fatal()
            if message is not None:
                record = self._record(message)
                if record is not None:
                    self._carry.append(record)

    # -- rebalancing -----------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            tps = [(p.topic, p.partition) for p in partitions]
            starts = self._open(tps)
            if self.sink.uncommitted_start == "earliest":
                missing = [p for p in partitions if (p.topic, p.partition) not in starts]
                if missing:
                    fresh = [c for c in consumer.committed(missing, timeout=30) if c.offset < 0]
                    for c in fresh:
                        starts[(c.topic, c.partition)] = OFFSET_BEGINNING
                    if fresh:
                        log.info(
                            "%s: no start and no committed offset for %s: starting at the earliest",
                            self.sink.name,
                            _describe(fresh),
                        )
            for p in partitions:
                start = starts.get((p.topic, p.partition))
                if start is not None:
                    p.offset = start
            consumer.assign(partitions)
            if self._paused:
                consumer.pause(partitions)
            log.info("%s: assigned %s", self.sink.name, _describe(partitions))
        except BaseException as exc:  # surfaced from the loop: callbacks must not raise
            self._fatal = exc
            self._stop.set()

    def _open(self, tps: list[TP]) -> dict[TP, int]:
        delays = iter(backoff_delays(self.loop.retry_initial_s, self.loop.retry_max_s))
        give_up = self._clock() + self.loop.max_poll_interval_ms / 2000
        while True:
            try:
                return dict(self.sink.open(tps))
            except TransportError as exc:
                delay = next(delays)
                if self._clock() + delay > give_up or self._stop.is_set():
                    raise
                telemetry.SINK_RETRIES.labels(sink=self.sink.name).inc()
                log.warning(
                    "%s: opening partitions failed, retrying in %.1f s: %s",
                    self.sink.name,
                    delay,
                    exc,
                )
                time.sleep(delay)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        dropped = self._batch.drop(tps)
        before = len(self._carry)
        self._carry = [r for r in self._carry if r.tp not in set(tps)]
        dropped += before - len(self._carry)
        if dropped:
            log.info(
                "%s: dropped %d uncommitted records of revoked partitions", self.sink.name, dropped
            )
        try:
            self.sink.close(tps)
        except BaseException as exc:
            self._fatal = exc
            self._stop.set()
        log.info("%s: revoked %s", self.sink.name, _describe(partitions))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = SinkError(f"{self.sink.name}: fatal Kafka client error: {err.str()}")
            self._stop.set()
        else:
            log.warning("%s: Kafka client: %s", self.sink.name, err.str())

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            exc, self._fatal = self._fatal, None
            raise exc


def _kafka_consumer(conf: dict[str, Any]) -> ConsumerLike:
    consumer: ConsumerLike = Consumer(conf)  # type: ignore[assignment]
    return consumer


def _describe(partitions: Sequence[TopicPartition]) -> str:
    if not partitions:
        return "nothing"
    parts: dict[str, list[int]] = {}
    for p in partitions:
        parts.setdefault(p.topic, []).append(p.partition)
    return "; ".join(f"{t} {sorted(ps)}" for t, ps in sorted(parts.items()))
