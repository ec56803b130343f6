"""Detection quality, measured: recall on injected attacks, false alerts on normal traffic.

``measure()`` plays seeded simulated traffic (``pipeline.simulate``) through
the enrichment stage, with the example sources the demo uses, and the
detection stage, in process with dict stores (no Kafka): a warm-up of
``warmup_days`` simulated days, so the detectors learn the users' habits and
places, then a measurement period into which :mod:`pipeline.scenarios`
injects an attack every ``every``. Per detector it reports:

- **recall**: of the injected scenarios labelled with the detector, the share
  for which it alerted on the labelled entity (goal 1.0);
- **false alerts per million**: alerts opened by normal events after the
  warm-up (evidence holding no injected event), per million normal events of
  the measurement period (goal at most 5);
- alerts an attack raised beyond its labels (``collateral``, not counted false),
  and alerts opened during the warm-up (for information);

and the detection cost per event (µs, both entity groups, the state encoded
and decoded as the worker does) beside the enrichment cost in the same run.

``python -m pipeline.stages.detect.quality`` prints the table of the full run:
500 users at 0.3 events a simulated second (about 50 events per user a day;
26,000 a day in all), 14 warm-up and 7 measured days, about 550,000 events.
Detection costs 60-90 µs an event in process (each event encodes its entity's
whole JSON state value, and decodes it when it is not cached, as in the
worker), so a full million takes minutes: the rate, not the warm-up, is what
was cut. ``auditstream bench --detect-state N`` runs it for N events on the
worker's RocksDB tables and reports the state's size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.scenarios import Label, Scenario, inject, scenarios
from pipeline.simulate import Simulator
from pipeline.stages.dedupe import DictStore, Store
from pipeline.stages.detect.base import EnrichedEventView
from pipeline.stages.detect.rules import Rules
from pipeline.stages.detect.stage import DetectStage, EntityCache
from pipeline.stages.enrich.examples import write_examples
from pipeline.stages.enrich.stage import EnrichStage

START = datetime(2026, 1, 5, tzinfo=UTC)
RECALL_GOAL = 1.0
FALSE_PER_MILLION_GOAL = 5.0


@dataclass
class DetectorQuality:
    detector: str
    scenarios: int = 0
    detected: int = 0
    false_alerts: int = 0
    collateral: int = 0
    warmup_alerts: int = 0

    @property
    def recall(self) -> float | None:
        return self.detected / self.scenarios if self.scenarios else None


@dataclass
class QualityReport:
    """What :func:`measure` found; :meth:`table` puts it in words and figures."""

    detectors: dict[str, DetectorQuality]
    events: int
    injected: int
    normal_measured: int  # normal events after the warm-up
    warmup_days: float
    measure_days: float
    scenarios: int
    detect_us: float  # per event, both groups
    enrich_us: float
    elapsed_s: float
    users: int
    state_bytes: int
    entities: int
    largest_value: int  # bytes of the largest state value
    misses: list[tuple[Scenario, Label]] = field(default_factory=list)
    false_samples: list[str] = field(default_factory=list)  # false alerts' summaries
    collateral_samples: list[str] = field(default_factory=list)

    def false_per_million(self, detector: str) -> float:
        return self.detectors[detector].false_alerts / max(self.normal_measured, 1) * 1e6

    @property
    def meets_goals(self) -> bool:
        return all(
            (q.recall is None or q.recall >= RECALL_GOAL)
            and self.false_per_million(name) <= FALSE_PER_MILLION_GOAL
            for name, q in self.detectors.items()
        )

    def table(self) -> str:
        lines = [
            f"{'detector':<26} {'scenarios':>9} {'recall':>7} {'false':>6} {'false/M':>8} "
            f"{'collateral':>10} {'warm-up':>8}"
        ]
        for name, q in self.detectors.items():
            recall = f"{q.recall:.3f}" if q.recall is not None else "-"
            lines.append(
                f"{name:<26} {q.scenarios:>9} {recall:>7} {q.false_alerts:>6} "
                f"{self.false_per_million(name):>8.2f} {q.collateral:>10} {q.warmup_alerts:>8}"
            )
        lines += [
            "",
            f"{self.events:,} events ({self.injected:,} injected in {self.scenarios} scenarios) "
            f"over {self.warmup_days:g} warm-up + {self.measure_days:g} measured simulated days, "
            f"{self.users} users; {self.normal_measured:,} normal events measured",
            f"detection {self.detect_us:.1f} µs/event, enrichment {self.enrich_us:.1f} µs/event "
            f"(in process); {self.elapsed_s:.1f} s in all",
            f"state: {self.entities:,} entities, {self.state_bytes / 1e6:.1f} MB of values, "
            f"the largest {self.largest_value:,} bytes",
            f"goals (recall {RECALL_GOAL:g}, false alerts/M <= {FALSE_PER_MILLION_GOAL:g}): "
            + ("met" if self.meets_goals else "NOT met"),
        ]
        for scenario, label in self.misses[:10]:
            lines.append(
                f"missed: scenario {scenario.index} ({scenario.kind}) at "
                f"{scenario.at:%Y-%m-%d %H:%M}: {label.detector} on {label.entity}"
            )
        lines += [f"false: {s}" for s in self.false_samples[:5]]
        lines += [f"collateral: {s}" for s in self.collateral_samples[:5]]
        return "\n".join(lines)


def measure(
    *,
    seed: int = 1,
    users: int = 500,
    service_accounts: int = 20,
    rate: float = 0.3,
    warmup_days: float = 14,
    measure_days: float = 7,
    every: timedelta = timedelta(hours=1),
    rules: Rules | None = None,
    start: datetime = START,
    stores: tuple[Store, Store] | None = None,
    cache_entities: int = 1024,
) -> QualityReport:
    """Run the traffic, the attacks, enrichment and detection; see the module docstring.

    ``rate`` is normal events per simulated second, on average. ``stores`` hold
    the users' and the addresses' states (dicts by default), each read through
    an :class:`EntityCache` of ``cache_entities`` as in the worker (0: none).
    """
    simulator = Simulator(seed, users, service_accounts)
    attack_start = start + timedelta(days=warmup_days)
    period = timedelta(days=measure_days)
    attacks = scenarios(seed, attack_start, period, every=every, simulator=simulator)
    end_s = (attack_start + period - start).total_seconds()
    traffic = _until(simulator.events(count=None, rate=rate, start=start, speed=1.0), end_s)
    detect = DetectStage(rules or Rules())
    names = [d.name for g in detect.groups for d in g.detectors]
    quality = {name: DetectorQuality(name) for name in names}
    for scenario in attacks:
        for label in scenario.labels:
            quality[label.detector].scenarios += 1
    injected = {e["event_id"]: s.index for s in attacks for e in s.events}
    hits: set[tuple[int, Label]] = set()
    false_samples: list[str] = []
    collateral_samples: list[str] = []
    users_store, ips_store = stores or (DictStore(), DictStore())
    users_cache, ips_cache = (EntityCache(cache_entities) if cache_entities else None for _ in "ui")
    counts: Counter[str] = Counter()
    detect_s = enrich_s = 0.0
    attack_us = int((attack_start - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6)
    began = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="auditstream-quality-") as tmp,
        EnrichStage.from_settings(write_examples(Path(tmp))) as enrich,
    ):
        stream = inject(traffic, attacks, start=start, speed=1.0)
        for offset, (_wall, event, source) in enumerate(stream):
            t0 = time.perf_counter()
            context, _errors = enrich.enrich(event)
            view = EnrichedEventView.from_enriched({**context, "event": event})
            t1 = time.perf_counter()
            position = ("access-events", 0, offset)
            alerts = detect.observe(detect.users, users_store, view, position, users_cache)
            emitted = list(alerts.alerts)
            if detect.needs_by_ip(view):
                by_ip = detect.observe(detect.ips, ips_store, view, position, ips_cache)
                emitted += by_ip.alerts
            t2 = time.perf_counter()
            enrich_s += t1 - t0
            detect_s += t2 - t1
            measured = view.occurred_us >= attack_us
            counts["injected" if source else "normal_measured" if measured else "warmup"] += 1
            for alert in emitted:
                label = Label(alert.detector, alert.entity_id)
                if source is not None and label in source.labels:
                    hits.add((source.index, label))
                if alert.revision != 1:
                    continue
                causes = [attacks[injected[i]] for i in alert.event_ids if i in injected]
                if any(label in s.labels for s in causes):
                    hits.update((s.index, label) for s in causes if label in s.labels)
                elif causes or source is not None:
                    quality[alert.detector].collateral += 1
                    collateral_samples.append(f"{alert.detector}: {alert.summary}")
                elif measured:
                    quality[alert.detector].false_alerts += 1
                    false_samples.append(f"{alert.detector}: {alert.summary}")
                else:
                    quality[alert.detector].warmup_alerts += 1
    elapsed = time.perf_counter() - began
    misses = []
    for scenario in attacks:
        for label in scenario.labels:
            if (scenario.index, label) in hits:
                quality[label.detector].detected += 1
            else:
                misses.append((scenario, label))
    events = sum(counts.values())
    state = [len(v) for store in (users_store, ips_store) for _, v in store.scan(None, 1 << 62)]
    return QualityReport(
        detectors=quality,
        events=events,
        injected=counts["injected"],
        normal_measured=counts["normal_measured"],
        warmup_days=warmup_days,
        measure_days=measure_days,
        scenarios=len(attacks),
        detect_us=detect_s / max(events, 1) * 1e6,
        enrich_us=enrich_s / max(events, 1) * 1e6,
        elapsed_s=elapsed,
        users=users,
        state_bytes=sum(state),
        entities=len(state),
        largest_value=max(state, default=0),
        misses=misses,
        false_samples=false_samples,
        collateral_samples=collateral_samples,
    )


def _until(
    traffic: Iterator[tuple[float, dict[str, Any]]], end_s: float
) -> Iterator[tuple[float, dict[str, Any]]]:
    for offset_s, event in traffic:
        if offset_s >= end_s:
            return
        yield offset_s, event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.stages.detect.quality",
        description="Recall on injected attacks and false alerts on normal traffic, per detector.",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rate", type=float, default=0.3, help="normal events per simulated s")
    parser.add_argument("--warmup-days", type=float, default=14)
    parser.add_argument("--days", type=float, default=7, help="measured days after the warm-up")
    parser.add_argument("--every", type=float, default=3600, help="seconds between attacks")
    args = parser.parse_args(argv)
    report = measure(
        seed=args.seed,
        users=args.users,
        rate=args.rate,
        warmup_days=args.warmup_days,
        measure_days=args.days,
        every=timedelta(seconds=args.every),
    )
    print(report.table())
    return 0 if report.meets_goals else 1


if __name__ == "__main__":
    sys.exit(main())
