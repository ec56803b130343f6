"""Detection's state and cost, measured without Kafka (``auditstream bench --detect-state N``).

1. **Realistic traffic**: the detection quality harness
   (:mod:`pipeline.stages.detect.quality`: 500 users, 14 warm-up and 7
   measured simulated days with an attack injected every hour, enrichment
   with the demo's sources) at the rate that makes about N events, on RocksDB
   databases opened with the worker's options, one per entity group, read
   through the worker's entity cache. Prints recall and false alerts per
   detector, the entities kept, the bytes of their values, the largest value,
   and the databases' size on disk after a flush and a full compaction.
2. **Cost**: the same harness over a tenth of the events with the cache and
   without it (every event decodes its entity's value, as before the cache),
   alternating, best of three rounds each, in the same run.
3. **Worst case**: one user, from one source address, sends N events of
   every kind an attacker would (failed logins from changing addresses and
   countries, logins from far away, downloads at a high rate, grants, first
   accesses to new restricted resources): the largest value after each tenth
   of them, which must stay far below Kafka's 1 MB message limit.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bench.common import peak_rss_mb
from pipeline.bench.dedupe import _open
from pipeline.stages.dedupe import DictStore, Store
from pipeline.stages.detect.base import US, EnrichedEventView
from pipeline.stages.detect.quality import QualityReport, measure
from pipeline.stages.detect.rules import Rules
from pipeline.stages.detect.stage import DetectStage, EntityCache
from pipeline.worker.state import PartitionStore

DAYS = 21.0  # 14 warm-up + 7 measured
KAFKA_MESSAGE_LIMIT = 1_000_000
PLACES = (
    ("GB", 51.51, -0.09, 5607),
    ("CN", 43.88, 125.32, 4837),
    ("BR", -23.55, -46.63, 28573),
    ("US", 39.04, -77.49, 14618),
    ("RU", 55.76, 37.62, 12389),
)


def rate_for(events: int, days: float = DAYS) -> float:
    """Normal events per simulated second (all users together) for about ``events``."""
    return events / (days * 86_400)


@dataclass(frozen=True)
class WorstCase:
    events: int
    largest_by_tenth: list[tuple[int, int, int]]  # (events so far, user value, address value)
    alerts: int
    us_per_event: float


def worst_case(events: int) -> WorstCase:
    """One user and one address under a long, mixed attack (see the module docstring)."""
    stage = DetectStage(Rules())
    users, ips = DictStore(), DictStore()
    caches = EntityCache(4), EntityCache(4)
    t0 = 1_770_000_000 * US
    tenth = max(events // 10, 1)
    sizes: list[tuple[int, int, int]] = []
    alerts = 0
    began = time.perf_counter()
    for i in range(events):
        country, lat, lon, asn = PLACES[i % len(PLACES)]
        kind = i % 6
        event = EnrichedEventView(
            event_id=f"w{i:09d}",
            occurred_us=t0 + i * 50_000,  # 20 events a second
            actor_id="victim",
            actor_type="user",
            action=("login", "login", "read", "download", "grant", "read")[kind],
            outcome="failure" if kind == 0 else "success",
            reason="invalid_password" if kind == 0 else None,
            source_ip="203.0.113.66",
            network_type="public",
            country=country,
            lat=lat,
            lon=lon,
            asn=asn + i % 1000,
            privileged=False,
            employment_status="terminated" if i % 1000 == 999 else "active",
            sensitivity="restricted" if kind == 5 else "internal",
            resource_type="file",
            resource_id=f"r{i}",
            attributes={"role": "admin"} if kind == 4 else {},
        )
        position = ("access-events", 0, i)
        alerts += len(stage.observe(stage.users, users, event, position, caches[0]).alerts)
        if stage.needs_by_ip(event):
            alerts += len(stage.observe(stage.ips, ips, event, position, caches[1]).alerts)
        if (i + 1) % tenth == 0:
            sizes.append((i + 1, _largest(users), _largest(ips)))
    elapsed = time.perf_counter() - began
    return WorstCase(events, sizes, alerts, elapsed / max(events, 1) * 1e6)


def _largest(store: Store) -> int:
    return max((len(v) for _, v in store.scan(None, 1 << 62)), default=0)


def _disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def realistic(events: int) -> tuple[QualityReport, float]:
    """The quality harness for about ``events`` on RocksDB; its report and MB on disk."""
    with tempfile.TemporaryDirectory(prefix="auditstream-detect-", dir="/var/tmp") as tmp:
        dbs = _open(Path(tmp) / "users"), _open(Path(tmp) / "ips")
        report = measure(
            rate=rate_for(events),
            stores=(PartitionStore(dbs[0]), PartitionStore(dbs[1])),
        )
        for db in dbs:
            db.flush()
            db.compact_range(None, None)
            db.close()
        return report, _disk_mb(Path(tmp))


def costs(events: int, rounds: int = 3) -> dict[str, float]:
    """Detection µs/event over about ``events`` with the worker's cache and without any.

    Rounds alternate between the two; the best round of each is reported (and
    enrichment's best beside them), so a busy neighbour favours neither.
    """
    result: dict[str, float] = {}
    for _ in range(rounds):
        for name, cache in (("cached", 1024), ("decoded every event", 0)):
            report = measure(rate=rate_for(events), cache_entities=cache)
            result[name] = min(report.detect_us, result.get(name, report.detect_us))
            result["enrich"] = min(report.enrich_us, result.get("enrich", report.enrich_us))
    return result


def run(events: int) -> dict[str, Any]:
    report, disk_mb = realistic(events)
    cost = costs(max(events // 10, 10_000))
    worst = worst_case(max(events, 10_000))
    return {"quality": report, "disk_mb": disk_mb, "costs": cost, "worst": worst}


def format_report(result: dict[str, Any]) -> str:
    report: QualityReport = result["quality"]
    worst: WorstCase = result["worst"]
    cost = result["costs"]
    largest = max(max(u, a) for _, u, a in worst.largest_by_tenth)
    lines = [
        f"detection state after {report.events:,} events (RocksDB, the worker's options):",
        report.table(),
        f"  on disk after flush and compaction: {result['disk_mb']:.1f} MB; "
        f"peak RSS {peak_rss_mb():.0f} MB",
        "",
        "detection cost per event, in process, same traffic, best of 3 alternating rounds:",
        f"  with the entity cache   {cost['cached']:7.1f} µs",
        f"  decoding every event    {cost['decoded every event']:7.1f} µs",
        f"  enrichment (baseline)   {cost['enrich']:7.1f} µs",
        "",
        f"worst case: one user and one address, {worst.events:,} attack events "
        f"({worst.alerts:,} alert revisions, {worst.us_per_event:.1f} µs/event):",
        "  events so far  user value  address value",
    ]
    lines += [f"  {n:>13,} {u:>11,} {a:>14,}" for n, u, a in worst.largest_by_tenth]
    lines.append(
        f"  largest {largest:,} bytes = {largest / KAFKA_MESSAGE_LIMIT:.1%} of Kafka's 1 MB limit"
    )
    return "\n".join(lines)
