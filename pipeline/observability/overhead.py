"""What metrics cost the worker: its stages with and without Prometheus updates, same run.

    .venv/bin/python -m pipeline.observability.overhead [--count 20000] [--rounds 5]

Runs the worker's :class:`~pipeline.worker.processor.Processor` in-process over
the same simulated records (decode, validate, enrich, encode; no Kafka),
alternating rounds with the metrics live and with every prometheus-client update
turned into a no-op, and prints the best rate of each and the difference. This is
the per-event CPU the metrics add; Kafka I/O, which dominates a live worker, is
left out, so it is an upper bound on the share of a live worker's throughput.

    .venv/bin/python -m pipeline.observability.overhead --live [--count 30000] [--rounds 2]

runs the real worker process (``auditstream worker``) against the running local
stack (``auditstream stack up``, default ports), once with metrics and once with
every update a no-op (``AUDITSTREAM_METRICS_OFF=1``), per round, each on its own
freshly filled private topics; the rate is read from outside, from the worker
group's committed offsets (as the lag exporter reads them), between 10 % and 100 %
of the records, so start-up and rebalancing are left out.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
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


def _produce(settings: Settings, batch: list[InputRecord]) -> None:
    from confluent_kafka import Producer

    producer = Producer({**settings.kafka.client_config(), "linger.ms": 20})
    for record in batch:
        producer.produce(
            settings.topics.input, key=record.key, value=record.value, partition=record.partition
        )
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("records not delivered to Kafka within 60 s")


def _drop_topics(settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    from pipeline.topics import TOPIC_FIELDS, changelog_topics

    names = [getattr(settings.topics, f) for f in TOPIC_FIELDS] + changelog_topics(settings)
    admin = AdminClient(settings.kafka.client_config())  # must outlive the futures
    for name, future in admin.delete_topics(names, operation_timeout=30).items():
        try:
            future.result(60)
        except Exception as exc:  # a private topic left behind is no reason to fail the run
            print(f"  (topic {name} not deleted: {exc})", file=sys.stderr)


def live_rate(base: Settings, count: int, metrics: bool, timeout_s: float = 600) -> float:
    """Events/s of one real worker process over ``count`` fresh records on private topics."""
    from pipeline.observability.lag import LagReader
    from pipeline.settings import to_env
    from pipeline.topics import ensure_group_offsets, ensure_topics, with_suffix
    from pipeline.worker.commands import METRICS_OFF_ENV

    settings = with_suffix(base, f"overhead-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings)
    ensure_group_offsets(settings)
    with tempfile.TemporaryDirectory(prefix="auditstream-overhead-") as tmp:
        _produce(settings, records(settings, count))
        env = {
            **os.environ,
            **to_env(settings),
            "AUDITSTREAM_WORKER__DATA_DIR": str(Path(tmp) / "worker"),
            METRICS_OFF_ENV: "0" if metrics else "1",
        }
        env.pop("AUDITSTREAM_WORKER__METRICS_PORT", None)  # no HTTP server: collection only
        log_path = Path(tmp) / "worker.log"
        reader = LagReader(settings, groups={settings.groups.worker: [settings.topics.input]})
        with log_path.open("wb") as log_file:
            worker = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "worker", "--quiet"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            first: tuple[float, int] | None = None
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if worker.poll() is not None:
                    raise RuntimeError(
                        f"the worker exited ({worker.returncode}): {log_path.read_text()[-2000:]}"
                    )
                done = count - sum(p.messages for p in reader.poll())
                now = time.monotonic()
                if first is None and done >= count // 10:
                    first = (now, done)
                if first is not None and done >= count and now > first[0]:
                    return (done - first[1]) / (now - first[0])
                time.sleep(0.1)
            raise RuntimeError(f"the worker did not consume {count} records in {timeout_s:.0f} s")
        finally:
            reader.close()
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
            _drop_topics(settings)


def measure_live(count: int, rounds: int) -> tuple[list[float], list[float]]:
    """Rates of the real worker with metrics and without, alternating, ``rounds`` each."""
    from pipeline.stack.manager import local_client_settings

    base = local_client_settings(load_settings())
    with_metrics: list[float] = []
    without: list[float] = []
    for n in range(rounds):
        # Alternate which goes first, so a warming broker favours neither.
        order = (True, False) if n % 2 == 0 else (False, True)
        for metrics_on in order:
            rate = live_rate(base, count, metrics_on)
            (with_metrics if metrics_on else without).append(rate)
            print(
                f"  round {n + 1}: {'with' if metrics_on else 'without'} metrics "
                f"{rate:10,.0f} events/s",
                flush=True,
            )
    return with_metrics, without


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=None, help="events per run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--live",
        action="store_true",
        help="run the real worker process against the local stack (`auditstream stack up`)",
    )
    args = parser.parse_args(argv)
    if args.live:
        count, rounds = args.count or 30_000, args.rounds or 2
        print(f"real worker process, local stack, {count} events per run, {rounds} rounds:")
        rates_on, rates_off = measure_live(count, rounds)
        best_on, best_off = max(rates_on), max(rates_off)
        print(
            f"  with metrics     {best_on:10,.0f} events/s (best of {len(rates_on)})\n"
            f"  without metrics  {best_off:10,.0f} events/s (best of {len(rates_off)})\n"
            f"  metrics cost     {(best_off - best_on) / best_off * 100:9.1f} % of the live "
            "worker's throughput"
        )
        return 0
    args.count = args.count or 20_000
    args.rounds = args.rounds or 5
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
