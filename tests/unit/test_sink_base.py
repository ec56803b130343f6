"""The sink loop: batching, commit after write, retry with pause, revoke, stop, errors."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from pipeline import telemetry
from pipeline.errors import TransportError
from pipeline.sinks.base import (
    TP,
    Batch,
    Sink,
    SinkError,
    SinkLoopConfig,
    SinkRunner,
    backoff_delays,
    consumer_config,
)

T = "topic-a"


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, err: KafkaError | None = None):
        self._t, self._p, self._o, self._err = topic, partition, offset, err

    def error(self) -> KafkaError | None:
        return self._err

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def timestamp(self) -> tuple[int, int]:
        return (2, 1_700_000_000_000 + self._o)

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return f"v{self._o}".encode()

    def headers(self) -> None:
        return None


class FakeConsumer:
    """A broker in memory: per-partition logs, positions, pause, commits, seeks."""

    def __init__(
        self,
        logs: dict[TP, list[int]],
        committed: dict[TP, int] | None = None,
    ) -> None:
        self.logs = logs
        self.committed_offsets = dict(committed or {})
        self.positions: dict[TP, int] = {}
        self.paused: set[TP] = set()
        self.commits: list[dict[TP, int]] = []
        self.seeks: list[tuple[TP, int]] = []
        self.assigned_with: list[TopicPartition] = []
        self.closed = False
        self.consumed_while_paused = 0
        self.callbacks: dict[str, Any] = {}
        self.pending_assign = False
        self.on_drained: Callable[[], None] | None = None
        self.on_poll: Callable[[FakeConsumer], None] | None = None
        self.errors: list[FakeMessage] = []

    # -- the consumer API --
    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks
        self.pending_assign = True

    def _rebalance(self) -> None:
        if self.pending_assign:
            self.pending_assign = False
            parts = [TopicPartition(t, p) for (t, p) in sorted(self.logs)]
            self.callbacks["on_assign"](self, parts)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned_with = list(partitions)
        for p in partitions:
            tp = (p.topic, p.partition)
            if p.offset == OFFSET_BEGINNING:
                self.positions[tp] = 0
            elif p.offset >= 0:
                self.positions[tp] = p.offset
            else:
                self.positions[tp] = self.committed_offsets.get(tp, 0)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for (t, p) in self.positions]

    def committed(self, partitions: list[TopicPartition], timeout: float = 0) -> list[Any]:
        return [
            TopicPartition(
                p.topic, p.partition, self.committed_offsets.get((p.topic, p.partition), -1001)
            )
            for p in partitions
        ]

    def _take(self, n: int) -> list[FakeMessage]:
        out: list[FakeMessage] = []
        for tp, pos in sorted(self.positions.items()):
            if tp in self.paused:
                continue
            for offset in self.logs.get(tp, []):
                if len(out) >= n:
                    break
                if offset >= pos:
                    out.append(FakeMessage(tp[0], tp[1], offset))
                    self.positions[tp] = offset + 1
                    pos = offset + 1
        return out

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        self._rebalance()
        if self.errors:
            return [self.errors.pop(0)]
        if self.paused:
            self.consumed_while_paused += 1
        out = self._take(num_messages)
        if not out and self.on_drained is not None:
            self.on_drained()
        return out

    def poll(self, timeout: float = -1) -> FakeMessage | None:
        self._rebalance()
        if self.on_poll is not None:
            self.on_poll(self)
        out = self._take(1)
        return out[0] if out else None

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(p.topic, p.partition) for p in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def seek(self, partition: TopicPartition) -> None:
        tp = (partition.topic, partition.partition)
        self.seeks.append((tp, partition.offset))
        self.positions[tp] = partition.offset

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        assert asynchronous is False
        done = {(o.topic, o.partition): o.offset for o in offsets}
        self.commits.append(done)
        self.committed_offsets.update(done)

    def close(self) -> None:
        if self.positions:
            self.revoke()
        self.closed = True

    # -- test controls --
    def revoke(self) -> None:
        parts = self.assignment()
        self.positions.clear()
        self.paused.clear()
        self.callbacks["on_revoke"](self, parts)


class RecordingSink(Sink):
    name = "test"

    def __init__(self, fail: Sequence[BaseException | None] = ()) -> None:
        self.fail = list(fail)
        self.written: list[list[tuple[str, int, int]]] = []
        self.attempts: list[int] = []
        self.opened: list[list[TP]] = []
        self.closed: list[list[TP]] = []
        self.starts: dict[TP, int] = {}
        self.resume_at: dict[TP, int] = {}

    def open(self, partitions: Sequence[TP]) -> Mapping[TP, int]:
        self.opened.append(list(partitions))
        return {tp: o for tp, o in self.starts.items() if tp in partitions}

    def write(self, batch: Batch) -> None:
        self.attempts.append(len(batch))
        if self.fail:
            exc = self.fail.pop(0)
            if exc is not None:
                raise exc
        self.written.append([r.ref for r in batch.records])

    def pre_commit(self, offsets: Mapping[TP, int]) -> dict[TP, int]:
        return {**offsets, **{tp: o for tp, o in self.resume_at.items() if tp in offsets}}

    def close(self, partitions: Sequence[TP]) -> None:
        self.closed.append(list(partitions))


def make_runner(sink: Sink, consumer: FakeConsumer, **loop: Any) -> SinkRunner:
    config = SinkLoopConfig(
        group_id="g",
        topics=[T],
        **{
            "batch_max_records": 10,
            "batch_max_ms": 20,
            "retry_initial_s": 0.01,
            "retry_max_s": 0.02,
            "idle_poll_s": 0.01,
            **loop,
        },
    )
    runner = SinkRunner(
        sink, config, {"bootstrap.servers": "x"}, consumer_factory=lambda c: consumer
    )
    idle_since: list[float] = []

    def stop_when_done() -> None:
        # Everything committed, or nothing more happening for a while (e.g. all revoked).
        ends = {tp: max(offsets) + 1 for tp, offsets in consumer.logs.items() if offsets}
        if all(consumer.committed_offsets.get(tp) == end for tp, end in ends.items()):
            runner.stop()
        idle_since.append(time.monotonic())
        if idle_since[-1] - idle_since[0] > 0.5:
            runner.stop()

    consumer.on_drained = stop_when_done
    return runner


def test_consumer_config_never_jumps_and_commits_by_hand() -> None:
    conf = consumer_config(
        {"bootstrap.servers": "b"}, SinkLoopConfig(group_id="g", topics=[T], instance_id="i-1")
    )
    assert conf["enable.auto.commit"] is False
    assert conf["auto.offset.reset"] == "error"
    assert conf["isolation.level"] == "read_committed"
    assert conf["group.id"] == "g"
    assert conf["group.instance.id"] == "i-1"


def test_batches_are_written_then_committed_at_last_plus_one() -> None:
    consumer = FakeConsumer({(T, 0): list(range(25))})
    sink = RecordingSink()
    assert make_runner(sink, consumer).run() == 0
    assert [len(w) for w in sink.written] == [10, 10, 5]
    assert [c[(T, 0)] for c in consumer.commits] == [10, 20, 25]
    flat = [ref[2] for w in sink.written for ref in w]
    assert flat == list(range(25))
    assert consumer.closed


def test_batch_is_written_after_max_ms_even_when_not_full() -> None:
    consumer = FakeConsumer({(T, 0): [0, 1, 2]})
    sink = RecordingSink()
    make_runner(sink, consumer, batch_max_records=1000, batch_max_ms=5).run()
    assert sink.written == [[(T, 0, 0), (T, 0, 1), (T, 0, 2)]]


def test_transport_errors_pause_retry_the_same_batch_and_resume() -> None:
    consumer = FakeConsumer({(T, 0): list(range(12)), (T, 1): [0, 1]})
    sink = RecordingSink(fail=[TransportError("down"), TransportError("still down"), None])
    before = telemetry.SINK_RETRIES.labels(sink="test")._value.get()
    polls: list[set[TP]] = []
    consumer.on_poll = lambda c: polls.append(set(c.paused))
    make_runner(sink, consumer).run()
    assert sink.attempts[:3] == [10, 10, 10]  # the same batch three times
    assert telemetry.SINK_RETRIES.labels(sink="test")._value.get() - before == 2
    assert polls and all(p == {(T, 0), (T, 1)} for p in polls)  # paused while waiting
    assert consumer.consumed_while_paused == 0
    assert not consumer.paused  # resumed
    refs = sorted(ref for w in sink.written for ref in w)
    assert refs == sorted([(T, 0, o) for o in range(12)] + [(T, 1, 0), (T, 1, 1)])
    assert consumer.committed_offsets == {(T, 0): 12, (T, 1): 2}


def test_a_revoke_while_retrying_drops_the_held_batch_uncommitted() -> None:
    consumer = FakeConsumer({(T, 0): list(range(5))})
    sink = RecordingSink(fail=[TransportError("down")])

    def revoke_once(c: FakeConsumer) -> None:
        c.on_poll = None
        c.revoke()

    consumer.on_poll = revoke_once
    make_runner(sink, consumer).run()
    assert sink.written == []
    assert consumer.commits == []
    assert sink.closed[0] == [(T, 0)]


def test_other_errors_stop_the_loop_without_committing() -> None:
    consumer = FakeConsumer({(T, 0): list(range(5))})
    sink = RecordingSink(fail=[ValueError("bug")])
    with pytest.raises(ValueError, match="bug"):
        make_runner(sink, consumer).run()
    assert consumer.commits == []
    assert consumer.closed


def test_stop_while_retrying_drops_the_batch_uncommitted() -> None:
    consumer = FakeConsumer({(T, 0): list(range(5))})
    sink = RecordingSink(fail=[TransportError("down")] * 100)
    runner = make_runner(sink, consumer)
    consumer.on_poll = lambda c: runner.stop()
    assert runner.run() == 0
    assert consumer.commits == []
    assert consumer.closed


def test_missing_offset_stops_with_a_clear_message() -> None:
    consumer = FakeConsumer({(T, 0): [0]})
    consumer.errors.append(
        FakeMessage(T, 0, -1001, KafkaError(KafkaError._AUTO_OFFSET_RESET, "no offset"))
    )
    with pytest.raises(SinkError, match="no valid position for topic-a\\[0\\]"):
        make_runner(RecordingSink(), consumer).run()


def test_missing_topic_stops_with_a_clear_message() -> None:
    consumer = FakeConsumer({(T, 0): [0]})
    consumer.errors.append(FakeMessage(T, -1, -1, KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)))
    with pytest.raises(SinkError, match="auditstream topics"):
        make_runner(RecordingSink(), consumer).run()


def test_open_chooses_start_offsets() -> None:
    consumer = FakeConsumer(
        {(T, 0): list(range(10)), (T, 1): list(range(4))}, committed={(T, 1): 2}
    )
    sink = RecordingSink()
    sink.starts = {(T, 0): 7}
    make_runner(sink, consumer).run()
    refs = sorted(ref for w in sink.written for ref in w)
    assert refs == [(T, 0, 7), (T, 0, 8), (T, 0, 9), (T, 1, 2), (T, 1, 3)]
    assert sink.opened == [[(T, 0), (T, 1)]]


def test_uncommitted_partitions_start_at_the_earliest_when_the_sink_says_so() -> None:
    consumer = FakeConsumer({(T, 0): [3, 4]}, committed={})
    sink = RecordingSink()
    sink.uncommitted_start = "earliest"
    make_runner(sink, consumer).run()
    assert consumer.assigned_with[0].offset == OFFSET_BEGINNING
    assert sink.written == [[(T, 0, 3), (T, 0, 4)]]


def test_pre_commit_can_move_the_position_forward() -> None:
    consumer = FakeConsumer({(T, 0): list(range(30))})
    sink = RecordingSink()
    sink.resume_at = {(T, 0): 25}
    original = sink.pre_commit

    def once(offsets: Mapping[TP, int]) -> dict[TP, int]:
        result = original(offsets)
        sink.resume_at = {}
        return result

    sink.pre_commit = once  # type: ignore[method-assign]
    make_runner(sink, consumer).run()
    assert consumer.seeks == [((T, 0), 25)]
    assert consumer.commits[0] == {(T, 0): 25}
    assert [ref[2] for ref in sink.written[1]] == list(range(25, 30))


def test_backoff_grows_to_the_maximum_with_jitter() -> None:
    delays = list(itertools.islice(backoff_delays(0.5, 4.0, rng=lambda: 1.0), 6))
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    low = list(itertools.islice(backoff_delays(0.5, 4.0, rng=lambda: 0.0), 3))
    assert low == [0.25, 0.5, 1.0]
