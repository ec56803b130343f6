"""The dedupe stage's cost and memory, measured without Kafka.

Loads ``n`` distinct event ids into RocksDB partition databases opened with the
worker's options (:data:`pipeline.worker.state.ROCKSDB_OPTIONS`), through the
real :class:`Deduper`, then measures lookups of known ids (duplicates) and new
ids, and the process's peak RSS. ``auditstream bench --dedupe-ids N`` runs it.
"""

from __future__ import annotations

import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.stages.dedupe import Deduper, Sighting, Verdict
from pipeline.worker.state import FAUST_OFFSET_KEY, ROCKSDB_OPTIONS, PartitionStore

DAY_US = 86_400 * 1_000_000


def _open(path: Path) -> Any:
    from faust.stores.rocksdb import RocksDBOptions

    return RocksDBOptions(**ROCKSDB_OPTIONS, use_rocksdict=True).open(path)


def rss_mb() -> float:
    """Current resident set size in MB (from /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
