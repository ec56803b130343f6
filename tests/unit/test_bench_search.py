"""``auditstream bench --search-docs``: the pure pieces (documents, query shapes, the report)."""

from __future__ import annotations

import argparse
import io
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.bench import register
from pipeline.bench.search import (
    WORDS,
    failed_logins_by_country,
    full_text,
    pick_term,
    resource_names,
    timeline,
    user_last_24h,
)
from pipeline.bench.search_corpus import (
    ABROAD_PLACES,
    Generator,
    day_indices,
    hour_counts,
    text_fields,
    unmapped_fields,
)
from pipeline.bench.search_export import IdTally, cli_args, export_until
from pipeline.bench.search_load import (
    BenchError,
    Corpus,
    LoadStats,
    _Sender,
    bulk_lines,
    events_properties,
    find_reusable,
    templates,
)
from pipeline.bench.search_report import (
    ExportResult,
    QueryResult,
    SearchReport,
    format_report,
    summary,
)
from pipeline.search.query import SORT_ASC, SORT_DESC
from pipeline.settings import Settings

START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday


@pytest.fixture(scope="module")
def docs() -> list[tuple[str, str, dict[str, Any]]]:
    """A week of 20,000 documents from one seed."""
    return list(Generator(7).documents(20_000, START, 7 * 24, "bench-search-t-events"))


# -- the documents --------------------------------------------------------------------------------


def test_hour_counts_sum_exactly_and_follow_the_day_and_the_week() -> None:
    counts = hour_counts(1_000_003, START, 14 * 24)
    assert sum(counts) == 1_000_003
    monday_2pm, monday_3am = counts[14], counts[3]
    saturday_2pm = counts[5 * 24 + 14]
    assert monday_2pm > 5 * monday_3am
    assert monday_2pm > 2 * saturday_2pm


def test_hour_counts_refuse_no_hours() -> None:
    with pytest.raises(ValueError):
        hour_counts(10, START, 0)


def test_every_document_fits_the_strict_events_template(docs: list[Any]) -> None:
    properties = events_properties()
    for _, _, doc in docs[:2000]:
        assert unmapped_fields(doc, properties) == []


def test_a_field_the_template_does_not_map_is_named() -> None:
    properties = events_properties()
    doc = {"event": {"id": "x", "acton": "login"}, "source": {"geo": {"location": {"lat": 1}}}}
    assert unmapped_fields(doc, properties) == ["event.acton"]
    assert unmapped_fields({"user": "alice"}, properties) == ["user"]


def test_documents_are_in_their_day_index_in_time_order_with_unique_ids(docs: list[Any]) -> None:
    days = [index for index, _, _ in docs]
    assert days == sorted(days)
    assert set(days) == set(day_indices("bench-search-t-events", START, START + timedelta(days=7)))
    for index, _id, doc in docs[::500]:
        assert index == f"bench-search-t-events-{doc['@timestamp'][:10].replace('-', '.')}"
        assert _id == doc["event"]["id"]
    assert len({_id for _, _id, _ in docs}) == len(docs)


def test_traffic_is_realistic(docs: list[Any]) -> None:
    outcomes = Counter(doc["event"]["outcome"] for _, _, doc in docs)
    assert 0.08 < outcomes["failure"] / len(docs) < 0.12
    users = {doc["user"]["id"] for _, _, doc in docs}
    assert len(users) > 2000
    countries = Counter(
        doc["source"]["geo"]["country_iso_code"]
        for _, _, doc in docs
        if "geo" in doc.get("source", {})
    )
    assert len(countries) > 15
    assert sum(countries.values()) < 0.6 * len(docs)  # the office network has no geo
    failed_logins = [
        doc
        for _, _, doc in docs
        if doc["event"]["action"] == "login" and doc["event"]["outcome"] == "failure"
    ]
    abroad = {p.iso for p in ABROAD_PLACES} - {"US", "BR"}
    foreign = [
        d for d in failed_logins if d["source"].get("geo", {}).get("country_iso_code") in abroad
    ]
    assert 0.1 < len(foreign) / len(failed_logins) < 0.5
    assert all(d["event"].get("reason") for d in failed_logins)
    # enrichment the worker would add is there
    sample = docs[0][2]
    assert sample["user"]["full_name"] and sample["auditstream"]["directory"]["title"]
    assert sample["user_agent"]["name"]


def test_the_same_seed_gives_the_same_documents() -> None:
    one = list(Generator(3).documents(50, START, 2, "p"))
    two = list(Generator(3).documents(50, START, 2, "p"))
    assert one == two


def test_text_fields_are_the_templates_text_fields() -> None:
    fields = text_fields(events_properties())
    assert {"message", "event.reason.text", "user.full_name.text"} <= set(fields)
    assert "auditstream.resource.name.text" in fields
    assert "event.reason" not in fields and "source.ip" not in fields


# -- loading ------------------------------------------------------------------------------------


def test_bulk_lines_create_each_document_with_its_id() -> None:
    (action, doc), *_ = bulk_lines([("idx-2026.11.02", "id-1", {"a": 1})])
    assert json.loads(action) == {"create": {"_index": "idx-2026.11.02", "_id": "id-1"}}
    assert json.loads(doc) == {"a": 1}
    assert action.endswith(b"\n") and doc.endswith(b"\n")


def test_refused_items_retry_only_429_and_5xx() -> None:
    pairs = [(b"a\n", b"1\n"), (b"b\n", b"2\n"), (b"c\n", b"3\n")]
    items = [
        {"create": {"status": 201}},
        {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
        {"create": {"status": 503}},
    ]
    assert _Sender._refused(pairs, items, retry=False) == pairs[1:]
    # a retried item may already have been created by the attempt that timed out
    assert _Sender._refused(pairs[:1], [{"create": {"status": 409}}], retry=True) == []


def test_a_mapping_error_stops_the_load_and_says_why() -> None:
    items = [{"create": {"status": 400, "error": {"type": "strict_dynamic_mapping_exception"}}}]
    with pytest.raises(BenchError, match=r"strict_dynamic_mapping_exception.*ecs\.py"):
        _Sender._refused([(b"a\n", b"1\n")], items, retry=False)


def _loaded(documents: int = 5000) -> Corpus:
    return Corpus("bench-search-abc123", documents, 42, 3000, START, 30 * 24)


def test_templates_are_the_shipped_ones_for_the_bench_prefixes() -> None:
    bodies = templates(_loaded(), Settings(), complete=True)
    events = bodies["bench-search-abc123-events"]
    assert events["index_patterns"] == ["bench-search-abc123-events-*"]
    assert events["template"]["aliases"] == {"bench-search-abc123-events": {}}
    assert events["template"]["mappings"]["properties"] == events_properties()
    assert events["_meta"]["bench"]["complete"] is True
    assert Corpus.from_meta("bench-search-abc123", events["_meta"]["bench"]) == _loaded()
    assert bodies["bench-search-abc123-alerts"]["index_patterns"] == [
        "bench-search-abc123-alerts-*"
    ]


class _FakeIndices:
    def __init__(self, found: list[dict[str, Any]]) -> None:
        self.found = found

    def get_index_template(self, name: str, **params: Any) -> dict[str, Any]:
        return {"index_templates": self.found}


class _FakeClient:
    def __init__(self, found: list[dict[str, Any]], counts: dict[str, int]) -> None:
        self.indices = _FakeIndices(found)
        self.counts = counts

    def count(self, index: str) -> dict[str, int]:
        return {"count": self.counts.get(index, 0)}


def _template(prefix: str, documents: int, complete: bool) -> dict[str, Any]:
    meta = Corpus(prefix, documents, 1, 3000, START, 720).meta(complete)
    return {"name": f"{prefix}-events", "index_template": {"_meta": {"bench": meta}}}


def test_a_kept_corpus_is_reused_only_when_complete_with_the_same_count() -> None:
    found = [
        _template("bench-search-aaaaaa", 5000, complete=False),
        _template("bench-search-bbbbbb", 9000, complete=True),
        _template("bench-search-cccccc", 5000, complete=True),  # but fewer documents counted
        _template("bench-search-dddddd", 5000, complete=True),
    ]
    counts = {"bench-search-cccccc-events": 4000, "bench-search-dddddd-events": 5000}
    corpus, notes = find_reusable(_FakeClient(found, counts), 5000)  # type: ignore[arg-type]
    assert corpus is not None and corpus.prefix == "bench-search-dddddd"
    assert [n.split(":")[0] for n in notes] == [
        "bench-search-aaaaaa",
        "bench-search-bbbbbb",
        "bench-search-cccccc",
    ]


# -- the queries --------------------------------------------------------------------------------


def test_one_users_last_24h_is_the_cli_query_newest_first() -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    body = user_last_24h("u00042", now, ("user.id",))
    assert body["size"] == 100 and body["sort"] == SORT_DESC and body["track_total_hits"] is True
    (span, users) = body["query"]["bool"]["filter"]
    assert span == {
        "range": {
            "@timestamp": {
                "format": "strict_date_optional_time",
                "gte": "2026-11-29T12:00:00.000000Z",
            }
        }
    }
    assert users["bool"]["should"] == [{"terms": {"user.id": ["u00042"]}}]


def test_failed_logins_by_country_is_an_aggregation_over_seven_days() -> None:
    until = datetime(2026, 11, 30, tzinfo=UTC)
    body = failed_logins_by_country(until)
    assert body["size"] == 0 and body["track_total_hits"] is True  # matches counted exactly
    assert body["aggs"]["countries"]["terms"]["field"] == "source.geo.country_iso_code"
    span, action, outcome = body["query"]["bool"]["filter"]
    assert span["range"]["@timestamp"]["gte"].startswith("2026-11-23T00:00:00")
    assert span["range"]["@timestamp"]["lt"].startswith("2026-11-30T00:00:00")
    assert action == {"terms": {"event.action": ["login"]}}
    assert outcome == {"terms": {"event.outcome": ["failure"]}}


def test_full_text_searches_the_given_fields_or_every_field() -> None:
    body = full_text("invalid_password", ["event.reason.text"])
    (clause,) = body["query"]["bool"]["must"]
    assert clause["query_string"]["query"] == "invalid_password"
    assert clause["query_string"]["fields"] == ["event.reason.text"]
    assert body["sort"] == SORT_DESC
    (unbounded,) = full_text("x", None)["query"]["bool"]["must"]
    assert "fields" not in unbounded["query_string"]


def test_full_text_terms_are_half_common_words_half_of_a_thousand_names() -> None:
    names = resource_names()
    assert len(names) == len(set(names)) > 1000
    assert {"inv-00042", "portal", "backups"} <= set(names)
    rng = random.Random(1)
    picked = [pick_term(rng, names) for _ in range(2000)]
    words = sum(1 for t in picked if t in WORDS)
    assert 900 < words < 1100
    assert len(set(picked) - set(WORDS)) > 500  # names seldom repeat


def test_timeline_is_one_users_whole_history_oldest_first() -> None:
    body = timeline("u00042", ("user.id", "user.name"))
    assert body["sort"] == SORT_ASC
    (users,) = body["query"]["bool"]["filter"]
    assert len(users["bool"]["should"]) == 2


def test_the_export_window_ends_on_the_hour_the_target_is_reached() -> None:
    corpus = _loaded(documents=720_000)
    counts = hour_counts(720_000, corpus.start, corpus.hours)
    until = export_until(corpus, 100_000)
    hours = int((until - corpus.start) / timedelta(hours=1))
    assert sum(counts[:hours]) >= 100_000 > sum(counts[: hours - 1])
    assert export_until(corpus, 10**9) == corpus.end


def test_cli_args_carry_every_option_auditstream_search_parses() -> None:
    from pipeline.search.commands import register as register_search

    parser = argparse.ArgumentParser()
    register_search(parser.add_subparsers())
    parsed = vars(parser.parse_args(["search"]))
    parsed.pop("func")
    ours = vars(cli_args("analyst", format="json", limit=0))
    assert set(parsed) <= set(ours)
    assert (ours["format"], ours["limit"], ours["role"]) == ("json", 0, "analyst")


def test_id_tally_counts_lines_and_distinct_event_ids() -> None:
    sink = io.StringIO()
    tally = IdTally(sink)
    a = '{"@timestamp":"t","event":{"id":"3f0e2d4c-1b2a-4c3d-9e8f-0a1b2c3d4e5f","kind":"event"}}\n'
    b = '{"@timestamp":"t","event":{"kind":"event","id":"short"}}\n'  # not where expected
    for line in (a, a, b):
        tally.write(line)
    assert tally.lines == 3 and len(tally.ids) == 2
    assert sink.getvalue() == a + a + b


# -- the report -----------------------------------------------------------------------------------


def test_summary_gives_percentiles_and_max() -> None:
    values = [float(v) for v in range(1, 101)]
    s = summary(values)
    assert s is not None
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01)
    assert s["max"] == 100.0
    assert summary([]) is None


def test_the_report_shows_every_figure_beside_its_baseline() -> None:
    report = SearchReport(
        corpus=_loaded(5_000_000),
        load=LoadStats(5_000_000, 500.0, 300.0, 4.0, 1000, 0, 2, 5000),
        failure_share=0.096,
        role="analyst",
        runs=3,
        queries=[
            QueryResult("a", "one user's last 24 h", [1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [5, 6, 7]),
            QueryResult("a'", "the whole command", [], [500.0, 600.0, 700.0], []),
        ],
        variation=["a: a different user each run"],
        export_window=(START, START + timedelta(days=6)),
        exports=[
            ExportResult("bare loop", 1_000_000, 100.0, 1_000_000, 1_000_000),
            ExportResult("auditstream search --json", 1_000_000, 200.0, 999_999, 1_000_000),
        ],
        index={
            "indices": 30,
            "documents": 5_000_000,
            "store_bytes": 5 * 1024**3,
            "primary_store_bytes": 5 * 1024**3,
            "segments": 300,
        },
        heap={
            "setting": "-Xms1g -Xmx1g",
            "max_bytes": 1024**3,
            "peak_percent": 70,
            "every_s": 2.0,
            "old_gcs": 0,
            "old_gc_s": 0.0,
            "breakers_tripped": 0,
        },
        rss_mb={"load": 240.0},
        loadavg={"start": (1.0, 2.0, 3.0)},
        cores=2,
    )
    text = format_report(report)
    assert "5,000,000 docs in 500.0 s = 10,000 docs/s" in text
    assert "5.00 GiB (1,074 bytes/doc)" in text
    assert "-Xms1g -Xmx1g" in text and "peak used 70%" in text
    bare = next(line for line in text.splitlines() if "bare loop" in line)
    cli = next(line for line in text.splitlines() if "search --json" in line)
    assert bare.split()[2:6] == ["10,000", "100.0", "1.00x", "-"]
    assert cli.split()[3:7] == ["5,000", "200.0", "0.50x", "+100"]  # 200 µs/doc against 100
    assert bare.endswith("1,000,000, 1,000,000: each once")
    assert cli.endswith("1,000,000, 999,999: MISMATCH")
    assert "(bound by the bench's own document generator" not in text
    assert "load 240 MB" in text and "1.00/2.00/3.00" in text
    row = next(line for line in text.splitlines() if line.startswith("a'"))
    assert row.split()[-5:] == ["600", "690", "698", "700", "-"]
    reused = format_report(SearchReport(**{**report.__dict__, "load": None}))
    assert "reused a corpus kept by an earlier --keep run" in reused
    bound = LoadStats(5_000_000, 500.0, 450.0, 4.0, 1000, 0, 2, 5000)
    assert "bench's own document generator" in format_report(
        SearchReport(**{**report.__dict__, "load": bound})
    )


def test_bench_registers_the_search_options() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["bench", "--search-docs", "5000000", "--keep"])
    assert (args.search_docs, args.keep, args.search_runs, args.export_docs) == (
        5_000_000,
        True,
        100,
        1_000_000,
    )
    assert parser.parse_args(["bench"]).search_docs is None
