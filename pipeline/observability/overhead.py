"""What metrics cost the worker: its stages with and without Prometheus updates, same run.

    .venv/bin/python -m pipeline.observability.overhead [--count 20000] [--rounds 5]

Runs the worker's :class:`~pipeline.worker.processor.Processor` in-process over
the same simulated records (decode, validate, enrich, encode; no Kafka),
alternating rounds with the metrics live and with every prometheus-client update
turned into a no-op, and prints the best rate of each and the difference. This is
the per-event CPU the metrics add; Kafka I/O, which dominates a live worker, is
left out, so it is an upper bound on the share of a live worker's throughput.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import metrics

from pipeline.codec import Encoding, encode
from pipeline.schemas import ACCESS_EVENT, default_store
from pipeline.settings import Settings, load_settings
from pipeline.simulate import Simulator
from pipeline.worker.processor import InputRecord, Processor


class _Null:
    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float, exemplar: Any = None) -> None:
        pass

    def set(self, value: float) -> None:
        pass


_NULL = _Null()


@contextmanager
def metrics_disabled() -> Iterator[None]:
    """Every prometheus-client metric update in this process does nothing inside the block."""
    patched = [
        (metrics.MetricWrapperBase, "labels", lambda self, *a, **k: _NULL),
        (metrics.Counter, "inc", _Null.inc),
        (metrics.Histogram, "observe", _Null.observe),
        (metrics.Gauge, "set", _Null.set),
    ]
    saved = [(cls, name, cls.__dict__[name]) for cls, name, _ in patched]
    try:
        for cls, name, replacement in patched:
            setattr(cls, name, replacement)
        yield
    finally:
        for cls, name, original in saved:
            setattr(cls, name, original)


def records(settings: Settings, count: int, seed: int = 1) -> list[InputRecord]:
    store = default_store()
    entry = store.latest(ACCESS_EVENT)
    simulator = Simulator(seed)
    start = datetime.now(tz=UTC) - timedelta(minutes=10)
    now_ms = int(time.time() * 1000)
    out = []
    for n in range(count):
        event = simulator.event(start + timedelta(seconds=n / 100))
        value = encode(event, entry, Encoding.SINGLE_OBJECT)
        key = str(event["actor"]["id"]).encode()
        partition = n % settings.topics.partitions
        out.append(InputRecord(settings.topics.input, partition, n, now_ms, key, value, []))
    return out


def _rate(processor: Processor, batch: list[InputRecord]) -> float:
    began = time.perf_counter()
    for record in batch:
        processor.process(record)
    return len(batch) / (time.perf_counter() - began)


def measure(settings: Settings, count: int, rounds: int) -> tuple[float, float]:
    """Best events/s with metrics, and without, over alternating rounds."""
    batch = records(settings, count)
    processor = Processor(settings, default_store())
    _rate(processor, batch[: min(count, 2000)])  # warm caches
    with_metrics: list[float] = []
    without: list[float] = []
    for _ in range(rounds):
        with_metrics.append(_rate(processor, batch))
        with metrics_disabled():
            without.append(_rate(processor, batch))
    return max(with_metrics), max(without)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    live, off = measure(load_settings(), args.count, args.rounds)
    overhead = (off - live) / off * 100
    print(
        f"worker stages in-process, {args.count} events x {args.rounds} rounds (best of each):\n"
        f"  with metrics     {live:10,.0f} events/s\n"
        f"  without metrics  {off:10,.0f} events/s\n"
        f"  metrics cost     {overhead:9.1f} % of in-process throughput "
        f"({(1 / live - 1 / off) * 1e6:.2f} µs per event)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
