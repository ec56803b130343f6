"""The search bench's results and the table it prints (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.bench.end_to_end import percentile
from pipeline.bench.search_load import Corpus, LoadStats

WARMUP = 5  # untimed runs of each query before its timed ones
EXPORT_PAGE = 1000  # the CLI's default --page-size


@dataclass(frozen=True)
class QueryResult:
    key: str
    label: str
    took_ms: list[float]  # empty where the server's took is not one number (a whole command)
    wall_ms: list[float]
    hits: list[int]
    cache: tuple[int, int] = (0, 0)  # shard request cache hits, misses during the timed runs


@dataclass(frozen=True)
class ExportResult:
    label: str
    documents: int
    seconds: float
    distinct: int
    expected: int

    @property
    def rate(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SearchReport:
    corpus: Corpus
    load: LoadStats | None  # None: reused from an earlier --keep run
    failure_share: float
    role: str
    runs: int
    queries: list[QueryResult]
    variation: list[str]
    export_window: tuple[datetime, datetime]
    exports: list[ExportResult]
    index: dict[str, int]
    heap: dict[str, Any]
    rss_mb: dict[str, float] = field(default_factory=dict)
    loadavg: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    cores: int = 0
    versions: dict[str, str] = field(default_factory=dict)


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {q: percentile(values, p) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))} | {
        "max": max(values)
    }


def _cells(values: list[float]) -> str:
    s = summary(values)
    if s is None:
        return f"{'-':>7}{'-':>7}{'-':>7}{'-':>7}"
    return "".join(
        f"{s[k]:>7.0f}" if s[k] >= 10 else f"{s[k]:>7.1f}" for k in ("p50", "p95", "p99", "max")
    )


def format_report(r: SearchReport) -> str:
    c = r.corpus
    gib = 1024**3
    lines = [
        f"auditstream bench --search-docs {c.documents:,}: {r.index['indices']} day indices "
        f"{c.events}-* over {c.hours // 24} days to {c.end:%Y-%m-%d %H:%M} UTC, "
        f"{c.users:,} users + service accounts, {r.failure_share:.1%} failures",
    ]
    if r.load is None:
        lines.append(
            "load: reused a corpus kept by an earlier --keep run (its load rate is in that run)"
        )
    else:
        ld = r.load
        lines.append(
            f"load: {ld.documents:,} docs in {ld.seconds:,.1f} s = {ld.rate:,.0f} docs/s "
            f"({ld.parallel} bulk requests of {ld.chunk:,} in flight, refresh off; the bench's "
            f"thread generated and serialised for {ld.generate_s:,.1f} s of it; {ld.requests:,} "
            f"requests, {ld.retried:,} items retried); refresh on + refresh {ld.refresh_s:.1f} s"
        )
        if ld.generate_s > 0.8 * ld.seconds:
            lines.append(
                "  (bound by the bench's own document generator, not by OpenSearch: a lower "
                "bound on what OpenSearch takes)"
            )
    ix = r.index
    lines += [
        f"on disk: {ix['store_bytes'] / gib:.2f} GiB "
        f"({ix['store_bytes'] / max(ix['documents'], 1):,.0f} bytes/doc), {ix['documents']:,} "
        f"docs, {ix['segments']} segments (not force-merged: production indices are not)",
        f"OpenSearch heap: {r.heap['setting']} (max {r.heap['max_bytes'] / gib:.2f} GiB); "
        f"peak used {r.heap['peak_percent']}% sampled every {r.heap['every_s']:g} s; old-gen GCs "
        f"{r.heap['old_gcs']} ({r.heap['old_gc_s']:.1f} s); circuit breakers tripped "
        f"{r.heap['breakers_tripped']}",
        "",
        f"query latency, ms, as role {r.role}: {r.runs} runs each after {WARMUP} warm-up runs",
        f"{'':<58}{'matches':>9}  {'server took':^28}  {'client wall':^28}  request",
        f"{'':<58}{'(median)':>9}  {'p50':>7}{'p95':>7}{'p99':>7}{'max':>7}  "
        f"{'p50':>7}{'p95':>7}{'p99':>7}{'max':>7}  cache hit/miss",
    ]
    for q in r.queries:
        matches = sorted(q.hits)[len(q.hits) // 2] if q.hits else 0
        name = f"{q.key:<4}{q.label}"
        cache = f"{q.cache[0]}/{q.cache[1]}" if q.took_ms else "-"
        lines.append(
            f"{name:<58.58}{matches:>9,}  {_cells(q.took_ms)}  {_cells(q.wall_ms)}  {cache:>14}"
        )
    lines += [f"  {v}" for v in r.variation]
    expected = r.exports[0].expected if r.exports else 0
    lines += [
        "",
        f"export: {r.export_window[0]:%Y-%m-%d %H:%M} to {r.export_window[1]:%Y-%m-%d %H:%M} UTC "
        f"({expected:,} documents match), PIT + search_after, pages of {EXPORT_PAGE:,}",
        f"{'':<58}{'docs/s':>9}{'time (s)':>10}{'vs bare':>9}{'µs/doc more':>13}   "
        "returned, distinct ids",
    ]
    base = r.exports[0] if r.exports else None
    for e in r.exports:
        once = "each once" if e.distinct == e.expected == e.documents else "MISMATCH"
        ratio = f"{e.rate / base.rate:.2f}x" if base and base.rate else "n/a"
        more = (
            f"{(1 / e.rate - 1 / base.rate) * 1e6:+,.0f}"
            if base and e is not base and e.rate and base.rate
            else "-"
        )
        lines.append(
            f"  {e.label:<56}{e.rate:>9,.0f}{e.seconds:>10.1f}{ratio:>9}{more:>13}   "
            f"{e.documents:,}, {e.distinct:,}: {once}"
        )
    lines += [
        "",
        "peak RSS of the bench process (VmHWM) after each phase: "
        + ", ".join(f"{k} {v:,.0f} MB" for k, v in r.rss_mb.items()),
        f"load average (1/5/15 min) on this {r.cores}-core machine, shared with other work: "
        + ", ".join(f"{k} {'/'.join(f'{x:.2f}' for x in v)}" for k, v in r.loadavg.items()),
        "versions: " + ", ".join(f"{k} {v}" for k, v in r.versions.items()),
    ]
    return "\n".join(lines)
