"""The dedupe stage's cost and memory, measured without Kafka.

Loads ``n`` distinct event ids into RocksDB partition databases opened with the
worker's options (:data:`pipeline.worker.state.ROCKSDB_OPTIONS`), through the
real :class:`Deduper`, then measures lookups of known ids (duplicates) and new
ids, and the process's peak RSS. ``auditstream bench --dedupe-ids N`` runs it.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.bench.common import peak_rss_mb, rss_mb
from pipeline.stages.dedupe import Deduper, Sighting, Verdict
from pipeline.worker.state import FAUST_OFFSET_KEY, ROCKSDB_OPTIONS, PartitionStore

DAY_US = 86_400 * 1_000_000


def _open(path: Path) -> Any:
    from faust.stores.rocksdb import RocksDBOptions

    return RocksDBOptions(**ROCKSDB_OPTIONS, use_rocksdict=True).open(path)


def measure(n: int, partitions: int = 12, probes: int = 100_000) -> dict[str, float]:
    deduper = Deduper(window_s=7 * 86_400, lateness_s=3600)
    base_rss = rss_mb()
    with tempfile.TemporaryDirectory(prefix="auditstream-dedupe-", dir="/var/tmp") as tmp:
        stores = [PartitionStore(_open(Path(tmp) / f"p{p}")) for p in range(partitions)]
        ids = [uuid.UUID(int=i, version=4).hex for i in range(probes)]
        began = time.perf_counter()
        for i in range(n):
            event_id = ids[i] if i < probes else uuid.UUID(int=i, version=4).hex
            p = i % partitions
            at = 10 * DAY_US + i  # all inside one window
            deduper.decide(stores[p], event_id, Sighting("h" * 64, p, i // partitions, at))
        load_s = time.perf_counter() - began
        began = time.perf_counter()
        duplicates = 0
        for i in range(probes):
            p = i % partitions
            sighting = Sighting("h" * 64, p, 10**12 + i, 10 * DAY_US + n)
            duplicates += deduper.decide(stores[p], ids[i], sighting).verdict is Verdict.DUPLICATE
        probe_s = time.perf_counter() - began
        disk = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
        assert duplicates == probes, "every known id must be found again"
        assert stores[0].get(FAUST_OFFSET_KEY) is None
    return {
        "ids": n,
        "load_us_per_id": load_s / n * 1e6,
        "duplicate_lookup_us": probe_s / probes * 1e6,
        "rss_mb_before": base_rss,
        "peak_rss_mb": peak_rss_mb(),
        "disk_mb": disk / 1e6,
    }


def report(result: dict[str, float]) -> str:
    return (
        f"dedupe state: {int(result['ids']):,} distinct event ids in 12 RocksDB partitions\n"
        f"  load {result['load_us_per_id']:.1f} µs/id, duplicate check "
        f"{result['duplicate_lookup_us']:.1f} µs/event\n"
        f"  RSS {result['rss_mb_before']:.0f} MB before, peak {result['peak_rss_mb']:.0f} MB; "
        f"{result['disk_mb']:.0f} MB on disk"
    )


def stage_costs(n: int = 20_000, rounds: int = 3) -> dict[str, float]:
    """µs per event of the worker's processing: pass-through, + dedupe, + enrich, + detect.

    The same simulated records go through :class:`Processor` in-process (no Kafka),
    the state in RocksDB opened with the worker's options; with detection, the
    records the worker sends to ``access-events-by-ip`` go through its by-IP
    handler too, so both entity groups are counted.
    """
    from datetime import UTC, datetime

    from pipeline.codec import Encoding, encode
    from pipeline.schemas import ACCESS_EVENT, default_store
    from pipeline.settings import DedupeSettings, DetectSettings, EnrichSettings, Settings
    from pipeline.simulate import Simulator
    from pipeline.stages.enrich.examples import write_examples
    from pipeline.worker.processor import InputRecord, PartitionState, Processor

    entry = default_store().latest(ACCESS_EVENT)
    now = datetime.now(tz=UTC)
    events = [e for _, e in Simulator(7).events(count=n, rate=1e6, start=now, speed=1.0)]
    values = [encode(e, entry, Encoding.SINGLE_OBJECT) for e in events]
    timestamp_ms = int(now.timestamp() * 1000) + 60_000
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="auditstream-stages-", dir="/var/tmp") as tmp:
        enrich = write_examples(Path(tmp) / "enrichment")
        variants = {
            "pass_through": Settings(
                dedupe=DedupeSettings(enabled=False),
                enrich=EnrichSettings(user_agent=False),
                detect=DetectSettings(enabled=False),
            ),
            "dedupe": Settings(
                enrich=EnrichSettings(user_agent=False), detect=DetectSettings(enabled=False)
            ),
            "dedupe_enrich": Settings(enrich=enrich, detect=DetectSettings(enabled=False)),
            "+detect": Settings(enrich=enrich),
        }
        processors = {name: Processor(s, default_store()) for name, s in variants.items()}
        by_ip_topic = Settings().topics.by_ip
        # Rounds alternate between the variants; the best round of each is reported,
        # which keeps a busy neighbour from favouring one variant.
        for round_ in range(rounds):
            for name, processor in processors.items():
                store = PartitionStore(_open(Path(tmp) / f"{name}-{round_}"))
                users = PartitionStore(_open(Path(tmp) / f"{name}-{round_}-users"))
                ips = PartitionStore(_open(Path(tmp) / f"{name}-{round_}-ips"))
                state = PartitionState(store, "changelog", users, "users-changelog")
                by_ip = 0
                began = time.perf_counter()
                for offset, value in enumerate(values):
                    record = InputRecord("bench", 0, offset, timestamp_ms, b"k", value, [])
                    for out in processor.process(record, state):
                        if out.topic == by_ip_topic:  # the by-IP agent's share of detection
                            again = InputRecord(
                                by_ip_topic, 0, by_ip, timestamp_ms, out.key, out.value, []
                            )
                            processor.process_by_ip(again, ips, "ips-changelog")
                            by_ip += 1
                us = (time.perf_counter() - began) / n * 1e6
                results[name] = min(us, results.get(name, us))
    return results


def stage_report(costs: dict[str, float]) -> str:
    base = costs["pass_through"]
    lines = ["worker processing per event, in-process (decode, validate, encode included):"]
    for name, us in costs.items():
        extra = "" if name == "pass_through" else f"  (+{us - base:.1f} µs over pass-through)"
        lines.append(f"  {name:<14} {us:7.1f} µs/event{extra}")
    return "\n".join(lines)
