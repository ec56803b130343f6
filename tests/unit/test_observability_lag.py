"""The lag exporter's arithmetic and exposition, without Kafka."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.errors import TransportError
from pipeline.observability.lag import (
    LAG_MESSAGES,
    LAG_SECONDS,
    LagExporter,
    PartitionLag,
    lag_messages,
    lag_seconds,
    next_offset,
    summarize,
)
from pipeline.settings import Settings


def _lag(partition: int, messages: int, seconds: float | None, group: str = "g") -> PartitionLag:
    return PartitionLag(group, "t", partition, 10, 0, 10 + messages, messages, seconds)


def test_a_group_without_a_commit_reads_from_the_low_watermark():
    assert next_offset(-1001, 7) == 7
    assert lag_messages(-1001, 7, 20) == 13


def test_lag_is_high_watermark_minus_committed_offset():
    assert lag_messages(15, 0, 20) == 5
    assert lag_messages(20, 0, 20) == 0


def test_a_commit_below_the_low_watermark_counts_only_records_that_still_exist():
    assert lag_messages(3, 10, 25) == 15


def test_lag_seconds_is_the_age_of_the_oldest_waiting_record():
    assert lag_seconds(4, 1_000_000, now=1_030.5) == 30.5
    assert lag_seconds(0, None, now=5.0) == 0.0
    assert lag_seconds(3, None, now=5.0) is None
    assert lag_seconds(3, 9_000, now=5.0) == 0.0  # clock skew never gives a negative age


def _exposed(exporter: LagExporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(exporter.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_collector_exposes_both_gauges_per_group_topic_partition():
    exporter = LagExporter.create(Settings())
    exporter.collector.update([_lag(0, 4, 12.5), _lag(1, 0, 0.0), _lag(2, 3, None)])
    samples = _exposed(exporter)
    key = (("group", "g"), ("partition", "0"), ("topic", "t"))
    assert samples[(LAG_MESSAGES, key)] == 4
    assert samples[(LAG_SECONDS, key)] == 12.5
    unknown = (("group", "g"), ("partition", "2"), ("topic", "t"))
    assert samples[(LAG_MESSAGES, unknown)] == 3
    assert (LAG_SECONDS, unknown) not in samples  # no made-up age when it was not read


class _Reader:
    def __init__(self, results: list[list[PartitionLag] | Exception]) -> None:
        self._results = results

    def poll(self) -> list[PartitionLag]:
        result = self._results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def test_a_failed_reading_keeps_the_last_values_and_is_counted():
    exporter = LagExporter.create(Settings())
    reader = _Reader([[_lag(0, 4, 12.5)], TransportError("Kafka down")])
    assert exporter.poll_once(reader) is not None  # type: ignore[arg-type]
    first = _exposed(exporter)
    assert exporter.poll_once(reader) is None  # type: ignore[arg-type]
    second = _exposed(exporter)
    key = (("group", "g"), ("partition", "0"), ("topic", "t"))
    assert second[(LAG_MESSAGES, key)] == 4
    assert second[("auditstream_lag_exporter_polls_total", (("result", "error"),))] == 1
    assert second[("auditstream_lag_exporter_polls_total", (("result", "ok"),))] == 1
    stamp = "auditstream_lag_exporter_last_success_timestamp_seconds"
    assert second[(stamp, ())] == first[(stamp, ())] > 0


def test_summary_line_names_each_group_with_its_total_and_oldest_record():
    line = summarize([_lag(0, 4, 12.5), _lag(1, 2, 3.0), _lag(0, 0, 0.0, group="h")])
    assert line == "lag g: 6 msgs, 12.5 s; h: 0 msgs, 0.0 s"


def test_metrics_can_be_switched_off_for_the_overhead_bench():
    from pipeline import telemetry
    from pipeline.observability.overhead import metrics_disabled

    child = telemetry.EVENTS.labels(stage="validate", result="ok")
    before = child._value.get()
    with metrics_disabled():
        telemetry.EVENTS.labels(stage="validate", result="ok").inc()
        telemetry.FRESHNESS_SECONDS.observe(1.0)
        child.inc()
    assert child._value.get() == before
    child.inc()
    assert child._value.get() == before + 1
