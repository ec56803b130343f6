"""The worker alone, with and without detection: what detecting costs on the live stack.

Each variant gets its own namespace (topics, group, state directory), the same
N records waiting in its input topic, and one worker process and nothing else
(no sinks competing for the two cores); its throughput is from the first to
the Nth enriched record. The difference between the variants, per event, is
detection's cost in the running worker: both entity groups, the by-IP topic's
round trip and the two extra changelogs included.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.bench.common import say
from pipeline.bench.end_to_end import (
    POLL_S,
    Prepared,
    Throughput,
    TopicCounter,
    Watch,
    cleanup,
    make_namespace,
    produce,
    spawn_command,
)
from pipeline.errors import ServiceUnavailable
from pipeline.settings import Settings

VARIANTS = {"without detection": False, "with detection": True}


@dataclass(frozen=True)
class WorkerAlone:
    variant: str
    throughput: Throughput
    peak_rss_kb: int | None

    @property
    def us_per_event(self) -> float | None:
        rate = self.throughput.steady_rate
        return 1e6 / rate if rate else None


def bench_variant(
    local: Settings, tmp: Path, events: Sequence[Prepared], variant: str
) -> WorkerAlone:
    from pipeline.topics import ensure_group_offsets, ensure_topics

    directory = tmp / variant.replace(" ", "-")
    directory.mkdir(parents=True)
    ns = make_namespace(local, directory)
    settings = ns.settings.model_copy(
        update={"detect": ns.settings.detect.model_copy(update={"enabled": VARIANTS[variant]})}
    )
    ns.settings = settings
    try:
        ensure_topics(settings)
        ensure_group_offsets(settings)
        produce(settings, settings.topics.input, events)
        started = time.monotonic()
        worker = spawn_command("worker", settings, directory, "worker")
        ns.children.append(worker)
        watch = Watch(len(events), started)
        enriched = TopicCounter(settings, settings.topics.enriched)
        deadline = started + max(300.0, len(events) / 50)
        try:
            while not watch.observe(time.monotonic(), enriched.count()):
                worker.check()
                if time.monotonic() > deadline:
                    raise ServiceUnavailable(
                        f"worker {variant}: {watch.last:,} of {len(events):,} enriched; "
                        f"log in {worker.log_path}"
                    )
                time.sleep(POLL_S)
        finally:
            enriched.close()
        rss = worker.peak_rss_kb()
        worker.stop()
        return WorkerAlone(variant, watch.result(), rss)
    finally:
        cleanup(ns)


def bench_workers(local: Settings, tmp: Path, events: Sequence[Prepared]) -> list[WorkerAlone]:
    results = []
    for variant in VARIANTS:
        say(f"  worker alone, {variant} …")
        results.append(bench_variant(local, tmp, events, variant))
    return results


def format_rows(results: Sequence[WorkerAlone]) -> list[str]:
    if not results:
        return []
    lines = [
        f"{'worker alone, same N, no sinks':<40}{'events/s':>10}{'time (s)':>10}{'µs/event':>17}"
    ]
    for r in results:
        rate, us = r.throughput.steady_rate, r.us_per_event
        lines.append(
            f"  {r.variant:<38}{'n/a' if rate is None else f'{rate:,.0f}':>10}"
            f"{r.throughput.steady_s:>10.2f}{'n/a' if us is None else f'{us:,.0f}':>17}"
        )
    costs = {r.variant: r.us_per_event for r in results}
    off, on = costs.get("without detection"), costs.get("with detection")
    if off is not None and on is not None:
        lines.append(
            f"  detection costs {on - off:+,.0f} µs/event in the running worker "
            f"(throughput {off / on:.2f} of that without it)"
        )
    return lines
