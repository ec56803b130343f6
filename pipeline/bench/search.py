"""``auditstream bench --search-docs N``: analysts' queries and exports on N documents.

1. Load: N event documents (:mod:`pipeline.bench.search_corpus`) over 30 days
   into bench-owned day indices (:mod:`pipeline.bench.search_load`), or reuse a
   corpus of N kept by an earlier ``--keep`` run.
2. Latency of typical queries, each run many times after a warm-up with a
   different user, window or term every run; the server's ``took`` and the
   client's wall time. The request bodies are those the CLI sends (built with
   :func:`pipeline.search.query.build_query`, its sort and first page of 100);
   the request cache stays at OpenSearch's default and its hits are counted.
3. Export rate (:mod:`pipeline.bench.search_export`): a large window exported
   through ``auditstream search --json`` itself (identity, masking, JSON lines
   to /dev/null, the read recorded), beside a bare opensearch-py PIT +
   ``search_after`` loop over the same window in the same run; each checked to
   return every document exactly once.
4. Peak RSS of this process, the indices' size on disk, OpenSearch's heap.

The reference time of the queries is the corpus's end (the load's start), so a
kept corpus answers "the last 24 h" the same way on a later day.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from opensearchpy import OpenSearch

from pipeline.bench import search_load
from pipeline.bench.common import say
from pipeline.bench.search_corpus import Generator, day_indices, text_fields, unmapped_fields
from pipeline.bench.search_export import cli_args, cli_search, measure_exports
from pipeline.bench.search_load import BenchError, Corpus, LoadStats
from pipeline.bench.search_report import (
    WARMUP,
    QueryResult,
    SearchReport,
    format_report,
)
from pipeline.ecs import iso
from pipeline.errors import ConfigError
from pipeline.search.commands import TABLE_LIMIT
from pipeline.search.query import SORT_ASC, SORT_DESC, Filters, build_query, parse_when
from pipeline.settings import Settings

DAYS = 30
USERS = 3000
CLI_RUNS = 20
COUNTRY_BUCKETS = 50
# Words an analyst types besides a resource's name: failure reasons, titles, networks, browsers.
WORDS = (
    "invalid_password", "account_locked", "mfa_failed", "permission_denied", "quota_exceeded",
    '"Security Engineer"', "Controller", "Recruiter", "Paralegal", "Counsel",
    "Telekom", "Rostelecom", "Comcast", "Firefox", "iPhone", "Macintosh",
)  # fmt: skip


# -- the queries (pure) ---------------------------------------------------------------------------


def page(
    query: dict[str, Any], sort: list[dict[str, str]], size: int = TABLE_LIMIT
) -> dict[str, Any]:
    """The first page the CLI asks for (:func:`pipeline.search.export.hits`, without the PIT)."""
    return {"size": size, "query": query, "sort": sort, "track_total_hits": True}


def user_last_24h(user: str, now: datetime, user_fields: tuple[str, ...]) -> dict[str, Any]:
    """``auditstream search --user USER --since 24h``, newest first."""
    filters = Filters(since=parse_when("24h", now), users=[user], user_fields=user_fields)
    return page(build_query(filters), SORT_DESC)


def failed_logins_by_country(until: datetime, days: int = 7) -> dict[str, Any]:
    """Failed logins over ``days`` days before ``until``, counted by source country."""
    filters = Filters(
        since=until - timedelta(days=days), until=until, actions=["login"], outcomes=["failure"]
    )
    return {
        "size": 0,
        "track_total_hits": True,
        "query": build_query(filters),
        "aggs": {
            "countries": {
                "terms": {"field": "source.geo.country_iso_code", "size": COUNTRY_BUCKETS}
            }
        },
    }


def full_text(term: str, fields: list[str] | None) -> dict[str, Any]:
    """``auditstream search TERM``: a Lucene query string over ``fields``, newest first."""
    return page(build_query(Filters(lucene=term, text_fields=fields)), SORT_DESC)


def timeline(user: str, user_fields: tuple[str, ...]) -> dict[str, Any]:
    """``auditstream timeline --user USER``: everything of one user, oldest first."""
    return page(build_query(Filters(users=[user], user_fields=user_fields)), SORT_ASC)


def pick_term(r: random.Random, names: list[str]) -> str:
    """Half the time a word of :data:`WORDS` (in 1-25 % of the documents), else a resource's name.

    Resource names run from an application's (a few percent of the documents) to
    one invoice's (a few hundredths of one percent); there are about a thousand.
    """
    return r.choice(WORDS) if r.random() < 0.5 else r.choice(names)


def resource_names() -> list[str]:
    from pipeline.simulate import SERVICES

    return sorted({rid for _, ids in SERVICES.values() for rid in ids})


# -- measuring ------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class HeapWatch(threading.Thread):
    """Samples OpenSearch's heap, old-generation GCs and circuit breakers while the bench runs."""

    def __init__(self, client: OpenSearch, every_s: float = 2.0) -> None:
        super().__init__(name="bench-heap", daemon=True)
        self.client = client
        self.every_s = every_s
        self.peak_percent = 0
        self._halt = threading.Event()
        self._first = self._sample()

    def _sample(self) -> dict[str, Any]:
        nodes = self.client.nodes.stats(metric="jvm,breaker")["nodes"]
        node = next(iter(nodes.values()))
        old = node["jvm"]["gc"]["collectors"].get("old", {})
        self.peak_percent = max(self.peak_percent, int(node["jvm"]["mem"]["heap_used_percent"]))
        return {
            "old_gcs": int(old.get("collection_count", 0)),
            "old_gc_ms": int(old.get("collection_time_in_millis", 0)),
            "tripped": sum(int(b.get("tripped", 0)) for b in node["breakers"].values()),
        }

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            with contextlib.suppress(Exception):  # a missed sample is only a missed sample
                self._sample()

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join(10)
        last = self._sample()
        info = self.client.nodes.info(metric="jvm")["nodes"]
        jvm = next(iter(info.values()))["jvm"]
        heap_args = [a for a in jvm.get("input_arguments", []) if a.startswith(("-Xmx", "-Xms"))]
        return {
            "setting": " ".join(heap_args[-2:]) or "?",
            "max_bytes": int(jvm["mem"]["heap_max_in_bytes"]),
            "peak_percent": self.peak_percent,
            "every_s": self.every_s,
            "old_gcs": last["old_gcs"] - self._first["old_gcs"],
            "old_gc_s": (last["old_gc_ms"] - self._first["old_gc_ms"]) / 1000,
            "breakers_tripped": last["tripped"] - self._first["tripped"],
        }


def time_query(
    client: OpenSearch,
    key: str,
    label: str,
    index: str,
    make: Callable[[random.Random], dict[str, Any]],
    rng: random.Random,
    runs: int,
    params: dict[str, str] | None = None,
) -> QueryResult:
    """``runs`` timed searches after :data:`WARMUP` untimed ones, each with a new body."""
    took: list[float] = []
    wall: list[float] = []
    hits: list[int] = []
    before = (0, 0)
    for n in range(WARMUP + runs):
        if n == WARMUP:
            before = request_cache(client, index)
        body = make(rng)
        began = time.perf_counter()
        response = client.search(index=index, body=body, params=params)
        elapsed = (time.perf_counter() - began) * 1000
        if n < WARMUP:
            continue
        took.append(float(response["took"]))
        wall.append(elapsed)
        hits.append(int(response["hits"]["total"]["value"]))
    after = request_cache(client, index)
    cache = (after[0] - before[0], after[1] - before[1])
    return QueryResult(key, label, took, wall, hits, cache)


def request_cache(client: OpenSearch, index: str) -> tuple[int, int]:
    """Shard request cache hits and misses so far on ``index``."""
    stats = client.indices.stats(index=index, metric="request_cache")["_all"]["total"]
    return int(stats["request_cache"]["hit_count"]), int(stats["request_cache"]["miss_count"])


# -- the phases ------------------------------------------------------------------------------------


def load_corpus(
    client: OpenSearch, settings: Settings, documents: int
) -> tuple[Corpus, LoadStats | None]:
    found, notes = search_load.find_reusable(client, documents)
    for note in notes:
        say(f"  not reusing {note}")
    if found is not None:
        say(f"reusing {found.prefix}: {documents:,} documents kept by an earlier --keep run")
        return found, None
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    corpus = Corpus(search_load.new_prefix(), documents, random.randrange(2**31), USERS,
                    end - timedelta(days=DAYS), DAYS * 24)  # fmt: skip
    generator = Generator(corpus.seed, users=corpus.users, topic=settings.topics.input)
    refused = unmapped_fields(generator.document(corpus.start), search_load.events_properties())
    if refused:
        raise BenchError(
            "the ECS documents have fields the events template does not map: "
            f"{', '.join(refused)}; bring pipeline/ecs.py and "
            "deploy/opensearch/audit-events.template.json in step"
        )
    generator = Generator(corpus.seed, users=corpus.users, topic=settings.topics.input)
    stats = _load_or_clean(client, settings, corpus, generator)
    say(f"  {stats.rate:,.0f} docs/s")
    return corpus, stats


def _load_or_clean(
    client: OpenSearch, settings: Settings, corpus: Corpus, generator: Generator
) -> LoadStats:
    """Create and fill the corpus's indices; on any failure remove what was made."""
    names = day_indices(corpus.events, corpus.start, corpus.end)
    say(f"loading {corpus.documents:,} documents into {len(names)} day indices {corpus.events}-* …")
    parallel = 2
    try:
        search_load.create(client, corpus, settings, names)
        docs = generator.documents(corpus.documents, corpus.start, corpus.hours, corpus.events)
        seconds, generate_s, requests, retried = search_load.bulk_load(
            client, docs, corpus.documents, parallel=parallel
        )
        refresh_s = search_load.finish(client, corpus)
        counted = search_load.count(client, corpus.events)
        if counted != corpus.documents:
            raise BenchError(
                f"{corpus.events} counts {counted:,} documents after loading {corpus.documents:,}"
            )
        search_load.mark_complete(client, corpus, settings)
    except BaseException:
        say(f"the load did not complete; removing {corpus.prefix}-* …")
        search_load.delete(client, corpus)
        raise
    return LoadStats(
        corpus.documents, seconds, generate_s, refresh_s, requests, retried, parallel,
        search_load.CHUNK,
    )  # fmt: skip


def measure_queries(
    client: OpenSearch, settings: Settings, corpus: Corpus, role: str, runs: int, seed: int
) -> tuple[list[QueryResult], list[str]]:
    from pipeline import access
    from pipeline.search.commands import text_fields_for, user_fields_for

    identity = access.Identity("auditstream-bench", cast(access.Role, role), False, False)
    hidden = access.masked_patterns(identity, settings)
    user_fields = user_fields_for(hidden)
    cli_fields = text_fields_for(hidden) if hidden else None
    texts = text_fields(search_load.events_properties())
    users = [f"u{n:05d}" for n in range(corpus.users)]
    span_h = corpus.hours - 7 * 24
    rng = random.Random(seed)
    names = resource_names()
    uncached = {"request_cache": "false"}
    client.indices.clear_cache(index=f"{corpus.events},{corpus.alerts}", request=True)
    events, both = corpus.events, f"{corpus.events},{corpus.alerts}"

    def week(r: random.Random) -> dict[str, Any]:
        return failed_logins_by_country(corpus.end - timedelta(hours=r.random() * span_h))

    results = [
        time_query(client, "a", "one user's last 24 h (search --user U --since 24h)", events,
                   lambda r: user_last_24h(r.choice(users), corpus.end - timedelta(
                       seconds=r.random() * 3600), user_fields), rng, runs),
        time_query(client, "b", "failed logins by country, 7 days (terms agg)", events,
                   week, rng, runs),
        time_query(client, "b'", "(b) with the request cache off for it", events,
                   week, rng, runs, {"request_cache": "false"}),
        time_query(client, "c", f"full text over the template's {len(texts)} text fields", events,
                   lambda r: full_text(pick_term(r, names), texts), rng, runs, uncached),
        time_query(client, "c'", "full text as `search TERM` builds it for the role", events,
                   lambda r: full_text(pick_term(r, names), cli_fields), rng, runs, uncached),
        time_query(client, "d", "timeline --user U (events + alerts, all time)", both,
                   lambda r: timeline(r.choice(users), user_fields), rng, runs),
    ]  # fmt: skip
    wall: list[float] = []
    with open("/dev/null", "w") as devnull:
        for n in range(WARMUP + CLI_RUNS):
            since = corpus.end - timedelta(hours=24)
            args = cli_args(role, user=[rng.choice(users)], since=iso(since))
            began = time.perf_counter()
            cli_search(settings, args, devnull)
            if n >= WARMUP:
                wall.append((time.perf_counter() - began) * 1000)
    results.append(QueryResult("a'", "(a) as the whole `auditstream search` command", [], wall, []))
    fields = f"{len(cli_fields)} fields, lenient" if cli_fields else "default_field *"
    variation = [
        f"users, windows and terms drawn with seed {seed} (new each bench run); the request "
        "cache emptied before the first query, so a reused corpus starts as cold as a new one",
        f"a, d: a different user each run, uniform over {corpus.users:,}; (a) ends its 24 h "
        "0-60 min before the corpus's end, varied each run",
        "b: the 7-day window ends at a random time in the corpus each run; OpenSearch rewrites "
        "it to match-all on the day indices wholly inside it, whose answers the request cache "
        "then keeps (as for a dashboard's repeated queries in production); b' does without",
        f"c, c': half the runs one of {len(WORDS)} words (failure reasons, titles, networks, "
        f"browsers), half one of {len(names):,} resource names; request cache off, so a word "
        f"that comes again is searched again; c' searches {fields}",
        f"a': {CLI_RUNS} runs of run_search: identity, validate, PIT open/close, the page of "
        f"{TABLE_LIMIT}, the read recorded to Kafka; wall time only",
    ]
    return results, variation


def _read_topic(settings: Settings, create: bool) -> None:
    """The bench's own input topic, where run_search records each read (created, then deleted)."""
    from confluent_kafka.admin import AdminClient

    from pipeline.bench.end_to_end import create_topics

    topic = settings.topics.input
    if create:
        create_topics(settings, [topic], 1)
        return
    admin = AdminClient({**settings.kafka.client_config(), "log_level": 4})
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result()


def check(args: argparse.Namespace) -> None:
    if args.search_docs < 10_000:
        raise ConfigError("--search-docs must be at least 10000 (the issue asks for 5000000)")
    if args.search_runs < 1 or args.export_docs < 1:
        raise ConfigError("--search-runs and --export-docs must be positive")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from importlib import metadata

    from pipeline.bench.end_to_end import start_stack
    from pipeline.topics import with_suffix

    check(args)
    local = start_stack(settings)
    client = search_load.bench_client(local.opensearch)
    role = local.access.role
    heap = HeapWatch(client)
    heap.start()
    rss: dict[str, float] = {}
    loadavg = {"start": os.getloadavg()}
    corpus, load = load_corpus(client, local, args.search_docs)
    rss["load"] = peak_rss_mb()
    loadavg["load"] = os.getloadavg()
    bench = with_suffix(local, corpus.prefix.removeprefix("bench-")).model_copy(
        update={
            "opensearch": local.opensearch.model_copy(
                update={"events_index_prefix": corpus.events, "alerts_index_prefix": corpus.alerts}
            )
        }
    )
    try:
        _read_topic(bench, create=True)
        failed = int(client.count(index=corpus.events, q="event.outcome:failure")["count"])
        say(f"timing the queries ({args.search_runs} runs each) …")
        queries, variation = measure_queries(
            client, bench, corpus, role, args.search_runs, random.randrange(2**31)
        )
        rss["queries"] = peak_rss_mb()
        loadavg["queries"] = os.getloadavg()
        window, exports = measure_exports(
            client, bench, corpus, min(args.export_docs, corpus.documents)
        )
        rss["exports"] = peak_rss_mb()
        loadavg["exports"] = os.getloadavg()
        report = SearchReport(
            corpus=corpus, load=load, failure_share=failed / corpus.documents, role=role,
            runs=args.search_runs, queries=queries, variation=variation,
            export_window=window, exports=exports, index=search_load.index_stats(client, corpus),
            heap=heap.stop(), rss_mb=rss, loadavg=loadavg, cores=os.cpu_count() or 0,
            versions={
                "OpenSearch": str(client.info()["version"]["number"]),
                "opensearch-py": metadata.version("opensearch-py"),
            },
        )  # fmt: skip
    finally:
        _read_topic(bench, create=False)
        if args.keep:
            say(f"kept {corpus.prefix}-* for the next run (--keep)")
        else:
            say(f"removing the bench indices {corpus.prefix}-* (the stack keeps running) …")
            search_load.delete(client, corpus)
    print(format_report(report))
    return 0
