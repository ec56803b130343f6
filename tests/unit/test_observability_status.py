"""The worker's status line: rates from counters on a fake clock, formatting, the thread."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from prometheus_client import Counter, Histogram

from pipeline.errors import TransportError
from pipeline.observability.lag import PartitionLag
from pipeline.observability.status import (
    Lag,
    StatusLine,
    StatusThread,
    quantile_bound,
    start_status_thread,
)
from pipeline.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Meters:
    """Counters shaped like pipeline.telemetry's, in no registry."""

    def __init__(self) -> None:
        self.events = Counter("t_events_total", "", ["stage", "result"], registry=None)
        self.dead = Counter("t_dead_letters_total", "", ["reason"], registry=None)
        self.freshness = Histogram(
            "t_freshness_seconds", "", buckets=(0.5, 1.0, 5.0, 10.0), registry=None
        )

    def line(self, clock: FakeClock) -> StatusLine:
        return StatusLine(
            clock=clock, events=self.events, dead_letters=self.dead, freshness=self.freshness
        )


@pytest.fixture
def meters() -> Meters:
    return Meters()


def _lag(messages: int, seconds: float | None, partition: int = 0) -> PartitionLag:
    return PartitionLag("g", "in", partition, 0, 0, messages, messages, seconds)


def test_rate_is_validated_records_per_second_since_the_last_line(meters: Meters) -> None:
    clock = FakeClock()
    status = meters.line(clock)
    meters.events.labels(stage="validate", result="ok").inc(12_000)
    meters.events.labels(stage="validate", result="dead_letter").inc(340)
    meters.events.labels(stage="dedupe", result="ok").inc(11_000)  # same records, not counted
    meters.events.labels(stage="enrich", result="ok").inc(11_000)
    clock.now += 10
    assert status.line(Lag(12, 0.84)).startswith("worker: 1,234 ev/s, ")
    clock.now += 4
    meters.events.labels(stage="validate", result="ok").inc(2)
    assert status.line(None).startswith("worker: 0 ev/s, ")  # 0.5 ev/s rounds to 0
    clock.now += 2
    meters.events.labels(stage="validate", result="ok").inc(10)
    assert status.line(None).startswith("worker: 5 ev/s, ")


def test_no_time_elapsed_gives_a_zero_rate_not_a_division_error(meters: Meters) -> None:
    status = meters.line(FakeClock())
    meters.events.labels(stage="validate", result="ok").inc(5)
    assert status.line(None).startswith("worker: 0 ev/s")


def test_dead_letters_show_the_total_and_what_is_new_since_the_last_line(meters: Meters) -> None:
    clock = FakeClock()
    status = meters.line(clock)
    clock.now += 5
    assert "0 dead letters (+0)" in status.line(None)
    meters.dead.labels(reason="schema_invalid").inc()
    clock.now += 5
    assert "1 dead letter (+1)" in status.line(None)
    meters.dead.labels(reason="decode_failed").inc(2)
    meters.dead.labels(reason="schema_invalid").inc(1500)
    clock.now += 5
    assert "1,503 dead letters (+1,502)" in status.line(None)
    clock.now += 5
    assert "1,503 dead letters (+0)" in status.line(None)


def test_the_whole_line(meters: Meters) -> None:
    clock = FakeClock()
    status = meters.line(clock)
    meters.events.labels(stage="validate", result="ok").inc(12_340)
    clock.now += 10
    assert status.line(Lag(12, 0.84)) == (
        "worker: 1,234 ev/s, 0 dead letters (+0), lag 12 msgs (oldest 0.8 s)"
    )
    clock.now += 5
    assert status.line(Lag(0, 0.0)) == "worker: 0 ev/s, 0 dead letters (+0), lag 0 msgs"
    clock.now += 5
    assert status.line(None) == "worker: 0 ev/s, 0 dead letters (+0), lag ?"
    clock.now += 5
    line = status.line(Lag(1_250_000, 95.2))
    assert line.endswith("lag 1,250,000 msgs (oldest 95 s)")
    clock.now += 5
    assert status.line(Lag(3, None)).endswith("lag 3 msgs")  # age not read in time


def test_lag_sums_partitions_and_takes_the_oldest_record() -> None:
    lag = Lag.of([_lag(5, 2.0, 0), _lag(7, 9.5, 1), _lag(0, 0.0, 2), _lag(1, None, 3)])
    assert lag == Lag(13, 9.5)
    assert Lag.of([_lag(4, None)]) == Lag(4, None)
    assert Lag.of([]) == Lag(0, None)


def test_freshness_appears_only_when_observed_in_the_interval(meters: Meters) -> None:
    clock = FakeClock()
    status = meters.line(clock)
    clock.now += 5
    assert "freshness" not in status.line(None)
    for _ in range(98):
        meters.freshness.observe(0.2)
    meters.freshness.observe(3.0)
    meters.freshness.observe(7.0)
    clock.now += 5
    assert status.line(None).endswith("lag ?, freshness p99 ≤ 5.0 s")
    meters.freshness.observe(60.0)
    clock.now += 5
    assert status.line(None).endswith("freshness p99 > 1 h")  # beyond the last bucket
    clock.now += 5
    assert "freshness" not in status.line(None)


def test_quantile_bound_uses_only_the_observations_in_between() -> None:
    before = ((1.0, 100.0), (5.0, 100.0), (float("inf"), 100.0))
    after = ((1.0, 100.0), (5.0, 110.0), (float("inf"), 110.0))
    assert quantile_bound(before, after, 0.99) == 5.0
    assert quantile_bound(before, before, 0.99) is None
    assert quantile_bound((), after, 0.5) == 1.0


class FakeReader:
    def __init__(self, results: list[list[PartitionLag] | Exception]) -> None:
        self.results = results
        self.closed = False
        self.groups: dict[str, list[str]] = {}

    def poll(self) -> list[PartitionLag]:
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            raise result
        return result

    def close(self) -> None:
        self.closed = True


def test_the_thread_prints_lines_reads_the_worker_group_and_survives_kafka_errors(
    meters: Meters,
) -> None:
    settings = Settings()
    reader = FakeReader([TransportError("kafka down"), [_lag(3, 1.5)]])

    def factory(_: Settings, groups: dict[str, list[str]]) -> Any:
        reader.groups = groups
        return reader

    out = io.StringIO()
    thread = StatusThread(
        settings, 0.02, out=out, reader_factory=factory, status=meters.line(FakeClock())
    )
    thread.start()
    deadline = time.monotonic() + 5
    while out.getvalue().count("\n") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.stop()
    thread.join(5)
    assert not thread.is_alive() and reader.closed
    lines = out.getvalue().splitlines()
    assert lines[0] == "worker: 0 ev/s, 0 dead letters (+0), lag ?"
    assert lines[1] == "worker: 0 ev/s, 0 dead letters (+0), lag 3 msgs (oldest 1.5 s)"
    assert reader.groups == {settings.groups.worker: [settings.topics.input]}


def test_a_reader_that_cannot_be_created_leaves_lag_unknown(meters: Meters) -> None:
    def factory(_: Settings, __: dict[str, list[str]]) -> Any:
        raise RuntimeError("no librdkafka")

    out = io.StringIO()
    thread = StatusThread(
        Settings(), 0.02, out=out, reader_factory=factory, status=meters.line(FakeClock())
    )
    thread.start()
    deadline = time.monotonic() + 5
    while "\n" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.stop()
    thread.join(5)
    assert out.getvalue().splitlines()[0].endswith("lag ?")


def test_start_status_thread_returns_a_running_daemon_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[StatusThread] = []
    monkeypatch.setattr(StatusThread, "start", lambda self: started.append(self))
    thread = start_status_thread(Settings(), 5.0)
    assert isinstance(thread, threading.Thread) and thread.daemon
    assert started == [thread]
