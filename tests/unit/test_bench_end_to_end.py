"""``auditstream bench``: the pure pieces (percentiles, rates, the report, the namespace)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import fastavro
import pytest

from pipeline.bench import register
from pipeline.bench.end_to_end import (
    ArchiveCounter,
    BenchReport,
    Latency,
    Throughput,
    Watch,
    _events_template,
    format_report,
    make_namespace,
    per_second,
    percentile,
    report_dict,
)
from pipeline.settings import Settings

# -- percentiles and rates ------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 10.0


def test_percentile_ignores_input_order() -> None:
    assert percentile([30.0, 10.0, 20.0], 50) == 20.0


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([42.0], 99) == 42.0


def test_percentile_refuses_no_values_and_bad_ranks() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_per_second_is_none_without_events_or_time() -> None:
    assert per_second(100, 2.0) == 50.0
    assert per_second(0, 2.0) is None
    assert per_second(100, 0.0) is None


def test_throughput_counts_steady_from_the_first_output_seen() -> None:
    t = Throughput(events=1000, steady_events=800, steady_s=2.0, total_s=5.0)
    assert t.steady_rate == 400.0
    assert t.total_rate == 200.0


# -- the watch ------------------------------------------------------------------------------------


def test_watch_measures_from_the_first_nonzero_count_to_the_target() -> None:
    watch = Watch(target=1000, started=10.0)
    assert not watch.observe(11.0, 0)
    assert not watch.observe(12.0, 200)
    assert not watch.observe(13.0, 600)
    assert watch.observe(14.0, 1000)
    assert watch.observe(15.0, 1000)  # stays done, time kept
    result = watch.result()
    assert result == Throughput(events=1000, steady_events=800, steady_s=2.0, total_s=4.0)
    assert watch.last == 1000


def test_watch_that_saw_everything_at_once_has_no_steady_rate() -> None:
    watch = Watch(target=50, started=0.0)
    watch.observe(1.0, 50)
    assert watch.result().steady_rate is None
    assert watch.result().total_rate == 50.0


def test_watch_without_its_target_has_no_result() -> None:
    watch = Watch(target=10, started=0.0)
    watch.observe(1.0, 5)
    with pytest.raises(ValueError):
        watch.result()


# -- the report -----------------------------------------------------------------------------------


def make_report(latencies: list[float] | None = None) -> BenchReport:
    return BenchReport(
        events=20_000,
        bulk=Throughput(20_000, 20_000, 2.0, 2.0),  # 10,000/s
        faust=Throughput(20_000, 19_000, 4.0, 8.0),  # 4,750/s; 2,500/s total
        pipeline=Throughput(20_000, 18_000, 9.0, 16.0),  # 2,000/s; 1,250/s total
        worker=Throughput(20_000, 19_500, 6.5, 10.0),
        archive_s=8.0,
        produce_s=0.5,
        latency=Latency(
            rate=500.0,
            seconds=20.0,
            produced=10_000,
            produce_s=20.01,
            latencies_ms=[1000.0, 2000.0, 3000.0] if latencies is None else latencies,
            unseen=0,
        ),
        rss_kb={"worker": 102_400, "sink-opensearch": 51_200, "sink-archive": None},
        load={"start": (1.5, 1.25, 1.0), "end": (2.0, 1.5, 1.0)},
        accounted={"searchable": (30_000, 30_000), "archived": (30_000, 30_000)},
        versions={"python": "3.11.7", "OpenSearch": "2.19.6"},
    )


def test_report_gives_each_rate_and_the_pipelines_ratio_to_it() -> None:
    text = format_report(make_report())
    lines = text.splitlines()
    bulk = next(line for line in lines if line.startswith("A  OpenSearch bulk"))
    assert bulk.split()[-3:] == ["10,000", "2.00", "0.20"]
    faust = next(line for line in lines if line.startswith("B  bare Faust"))
    assert faust.split()[-3:] == ["4,750", "4.00", "0.42"]
    faust_total = lines[lines.index(faust) + 1]
    assert faust_total.split()[-3:] == ["2,500", "8.00", "0.50"]
    pipeline = next(line for line in lines if line.startswith("P  pipeline"))
    assert pipeline.split()[-3:] == ["2,000", "9.00", "1.00"]


def test_report_gives_latency_percentiles_rss_load_and_versions() -> None:
    text = format_report(make_report())
    assert "p50 2,000 ms" in text
    assert "max 3,000 ms" in text
    assert "N = 20,000 events" in text
    assert "worker 100 MB, sink-opensearch 50 MB, sink-archive n/a" in text
    assert "1.50/1.25/1.00 at start" in text
    assert "searchable 30,000/30,000" in text
    assert "OpenSearch 2.19.6" in text


def test_report_without_latency_samples_says_so() -> None:
    text = format_report(make_report(latencies=[]))
    assert "p50 n/a ms" in text


def test_json_report_is_serializable_with_ratios() -> None:
    data = json.loads(json.dumps(report_dict(make_report())))
    assert data["ratios"] == {
        "pipeline_to_bulk": 0.2,
        "pipeline_to_faust": 0.42,
        "pipeline_to_faust_total": 0.5,
    }
    assert data["latency_ms"]["p50"] == 2000.0
    assert "latencies_ms" not in data["latency_ms"]
    assert data["pipeline"]["steady_rate"] == 2000.0


# -- the namespace and its parts -------------------------------------------------------------------


def test_namespace_isolates_topics_groups_indices_and_files(tmp_path: Path) -> None:
    ns = make_namespace(Settings(), tmp_path)
    assert all(ns.suffix in name for name in ns.topics())
    assert all(ns.suffix in name for name in ns.groups())
    assert all(p.startswith(ns.suffix) for p in ns.index_prefixes())
    assert not any(p.startswith("audit-") for p in ns.index_prefixes())
    assert ns.settings.archive.backend == "filesystem"
    assert Path(ns.settings.archive.path).is_relative_to(tmp_path)
    assert Path(ns.settings.worker.data_dir).is_relative_to(tmp_path)


def test_two_namespaces_do_not_collide(tmp_path: Path) -> None:
    assert (
        make_namespace(Settings(), tmp_path).suffix != make_namespace(Settings(), tmp_path).suffix
    )


def test_bulk_template_is_the_shipped_one_for_the_scratch_prefix() -> None:
    body = _events_template("bench-x-bulk", Settings())
    assert body["index_patterns"] == ["bench-x-bulk-*"]
    assert body["template"]["aliases"] == {"bench-x-bulk": {}}
    assert body["template"]["mappings"]["dynamic"] == "strict"


def write_object(path: Path, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}]}
    with path.open("wb") as fh:
        fastavro.writer(
            fh,
            fastavro.parse_schema(schema),
            [{"n": n} for n in range(count)],
            metadata={"auditstream.count": str(count)},
        )


def test_archive_counter_sums_object_counts_and_skips_temporary_files(tmp_path: Path) -> None:
    topic = tmp_path / "access-events"
    write_object(topic / "00000" / "00000000000000000000.avro", 3)
    write_object(topic / "00001" / "00000000000000000000.avro", 4)
    write_object(topic / "00001" / ".00000000000000000004.avro.123.ab.tmp", 9)
    counter = ArchiveCounter(topic)
    assert counter.count() == 7
    write_object(topic / "00001" / "00000000000000000004.avro", 5)
    assert counter.count() == 12


def test_archive_counter_of_a_missing_topic_is_zero(tmp_path: Path) -> None:
    assert ArchiveCounter(tmp_path / "nothing").count() == 0


def test_bench_options_and_defaults() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["bench"])
    assert (args.events, args.rate, args.latency_seconds, args.json) == (20_000, 500.0, 20.0, False)
    args = parser.parse_args(["bench", "--events", "5", "--rate", "50", "--json"])
    assert (args.events, args.rate, args.json) == (5, 50.0, True)


def test_worker_rows_give_detection_cost_per_event_between_the_variants():
    from pipeline.bench.worker_alone import WorkerAlone, format_rows

    off = WorkerAlone("without detection", Throughput(1000, 900, 0.45, 1.0), 100_000)
    on = WorkerAlone("with detection", Throughput(1000, 900, 0.9, 1.5), 120_000)
    assert (off.us_per_event, on.us_per_event) == (500.0, 1000.0)
    rows = format_rows([off, on])
    assert "2,000" in rows[1] and "500" in rows[1]
    assert "1,000" in rows[2]
    assert "detection costs +500 µs/event" in rows[3] and "throughput 0.50" in rows[3]
    assert format_rows([]) == []
