"""``bench --archive``: the report's figures and wording, and a tiny run of the real path."""

from __future__ import annotations

import json

import pytest

from pipeline.bench.archive import (
    ArchiveBench,
    CodecResult,
    Timed,
    codec_missing,
    format_report,
    measure,
)
from pipeline.errors import ConfigError
from pipeline.settings import Settings


def bench() -> ArchiveBench:
    result = CodecResult(
        codec="deflate",
        objects=4,
        uncompressed=80_000_000,
        archive=Timed(seconds=4.0, count=200_000, size=20_000_000),
        bare_write=Timed(seconds=2.0, count=200_000, size=19_000_000),
        verify=Timed(seconds=0.5, count=4, size=20_000_000),
        bare_hash=Timed(seconds=0.1, count=4, size=20_000_000),
    )
    return ArchiveBench(
        records=200_000,
        payload=75_000_000,
        batch=50_000,
        store="filesystem",
        rss_with_records_mb=300.4,
        peak_rss_mb=420.6,
        load=(1.25, 1.5),
        results=[result],
        missing={"zstandard": "no zstd here"},
    )


def test_rates_are_per_second_and_zero_for_no_time() -> None:
    timed = Timed(seconds=2.0, count=100, size=3_000_000)
    assert (timed.per_s, timed.mb_s) == (50.0, 1.5)
    assert (Timed(0.0, 5, 5).per_s, Timed(0.0, 5, 5).mb_s) == (0.0, 0.0)


def test_the_report_puts_each_figure_beside_its_baseline() -> None:
    text = format_report(bench())
    lines = text.splitlines()
    assert lines[0] == (
        "archive: 200,000 simulated access events (75.0 MB of keys and values), one partition, "
        "50,000 records per object; filesystem; each figure the fastest of 1 round"
    )
    assert lines[1] == (
        "  deflate (level 6): 4 objects, 20.0 MB written, compression ratio 4.00 "
        "(80.0 MB uncompressed)"
    )
    archive, verify = lines[2].split(), lines[3].split()
    assert archive[:5] == ["archive", "50,000", "records/s", "5.00", "MB/s"]
    assert archive[5:11] == ["bare", "fastavro", "writer", "100,000", "records/s", "9.50"]
    assert lines[2].endswith("(0.50x the baseline)")
    assert verify[:5] == ["verify", "8.0", "objects/s", "40.0", "MB/s"]
    assert verify[5:10] == ["bare", "SHA-256", "40.0", "objects/s", "200.0"]
    assert lines[3].endswith("(0.20x the baseline)")
    assert lines[4] == "  zstandard: not measured: no zstd here"
    assert lines[5].startswith(
        "  RSS 300 MB with the records in memory; peak 421 MB; load average 1.25 before, 1.50 after"
    )


def test_the_json_report_has_every_figure() -> None:
    js = json.loads(json.dumps(bench().to_json()))
    deflate = js["codecs"]["deflate"]
    assert (deflate["level"], deflate["objects"], deflate["ratio"]) == (6, 4, 4.0)
    assert deflate["archive"] == {"seconds": 4.0, "per_s": 50_000.0, "mb_s": 5.0}
    assert deflate["bare_sha256"]["mb_s"] == 200.0
    assert js["not_measured"] == {"zstandard": "no zstd here"}
    assert (js["peak_rss_mb"], js["load_average"]) == (420.6, [1.25, 1.5])


def test_deflate_is_always_there() -> None:
    assert codec_missing("deflate") is None


def test_a_tiny_run_archives_verifies_and_compares_every_codec() -> None:
    result = measure(60, Settings(), "filesystem", batch=25, rounds=2)
    assert (result.records, result.batch) == (60, 25)
    measured = {r.codec: r for r in result.results}
    assert set(measured) | set(result.missing) == {"deflate", "zstandard"}
    for r in measured.values():
        assert r.objects == 3 and r.archive.count == r.bare_write.count == 60
        assert r.verify.count == r.bare_hash.count == 3
        assert r.verify.size == r.bare_hash.size == r.archive.size > 0
        assert r.ratio > 1
    assert result.peak_rss_mb > 0 and result.rss_with_records_mb > 0


def test_nothing_to_archive_is_refused() -> None:
    with pytest.raises(ConfigError, match="N ≥ 1"):
        measure(0, Settings(), "filesystem")
