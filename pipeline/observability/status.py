"""The worker's status line for people at a terminal, every few seconds on stderr.

    worker: 1,234 ev/s, 0 dead letters (+0), lag 12 msgs (oldest 0.8 s)

Rate and dead letters come from this process's prometheus counters
(:mod:`pipeline.telemetry`): records the validate stage handled (ok and
dead-lettered) per second since the last line, and dead letters in total and
since the last line. Lag is the worker group's committed offset against the high
watermark of the input topic, read by the lag exporter's
:class:`~pipeline.observability.lag.LagReader` (``Consumer.committed()`` without
joining the group, and the watermarks); it moves with the worker's commits, so
it trails the records in flight. Freshness (indexed minus received) is observed
by the OpenSearch sink, so it is shown only when this process observed some in
the interval (the p99 bucket bound).

Everything runs on one daemon thread; the Faust event loop never waits for it.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from prometheus_client import Counter, Histogram

from pipeline import telemetry
from pipeline.observability.lag import LagReader, PartitionLag
from pipeline.settings import Settings

log = logging.getLogger(__name__)

RATE_STAGE = "validate"  # every input record passes it exactly once (ok or dead letter)


@dataclass(frozen=True)
class Sample:
    """The counters at one moment."""

    at: float
    events: float  # records through RATE_STAGE, any result
    dead_letters: float
    freshness_buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)


@dataclass(frozen=True)
class Lag:
    """The worker group's lag on its input topic, summed over partitions."""

    messages: int
    oldest_s: float | None  # age of the oldest waiting record; None: not read

    @classmethod
    def of(cls, snapshot: list[PartitionLag]) -> Lag:
        ages = [p.seconds for p in snapshot if p.seconds is not None]
        return cls(sum(p.messages for p in snapshot), max(ages) if ages else None)


def _counter_total(counter: Counter, **match: str) -> float:
    total = 0.0
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and all(
                sample.labels.get(k) == v for k, v in match.items()
            ):
                total += sample.value
    return total


def _buckets(histogram: Histogram) -> tuple[tuple[float, float], ...]:
    out = []
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                out.append((float(sample.labels["le"]), sample.value))
    return tuple(sorted(out))


def quantile_bound(
    before: tuple[tuple[float, float], ...], after: tuple[tuple[float, float], ...], q: float
) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of the observations in between."""
    start = dict(before)
    deltas = [(le, count - start.get(le, 0.0)) for le, count in after]
    if not deltas or deltas[-1][1] <= 0:
        return None
    wanted = q * deltas[-1][1]
    return next(le for le, cumulative in deltas if cumulative >= wanted)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


class StatusLine:
    """Turns successive counter samples (and a lag reading) into one line each."""

    def __init__(
        self,
        *,
        label: str = "worker",
        clock: Callable[[], float] = time.monotonic,
        events: Counter = telemetry.EVENTS,
        dead_letters: Counter = telemetry.DEAD_LETTERS,
        freshness: Histogram = telemetry.FRESHNESS_SECONDS,
    ) -> None:
        self._label = label
        self._clock = clock
        self._events = events
        self._dead_letters = dead_letters
        self._freshness = freshness
        self._last = self.sample()

    def sample(self) -> Sample:
        return Sample(
            at=self._clock(),
            events=_counter_total(self._events, stage=RATE_STAGE),
            dead_letters=_counter_total(self._dead_letters),
            freshness_buckets=_buckets(self._freshness),
        )

    def line(self, lag: Lag | None) -> str:
        """The line for now, against the previous call's sample (or the construction's)."""
        now = self.sample()
        before, self._last = self._last, now
        return self.render(before, now, lag)

    def render(self, before: Sample, now: Sample, lag: Lag | None) -> str:
        elapsed = now.at - before.at
        rate = (now.events - before.events) / elapsed if elapsed > 0 else 0.0
        dead = now.dead_letters
        parts = [
            f"{rate:,.0f} ev/s",
            f"{dead:,.0f} dead letter{'' if dead == 1 else 's'} "
            f"(+{now.dead_letters - before.dead_letters:,.0f})",
        ]
        if lag is None:
            parts.append("lag ?")
        elif lag.messages == 0 or lag.oldest_s is None:
            parts.append(f"lag {lag.messages:,} msgs")
        else:
            parts.append(f"lag {lag.messages:,} msgs (oldest {_seconds(lag.oldest_s)})")
        p99 = quantile_bound(before.freshness_buckets, now.freshness_buckets, 0.99)
        if p99 is not None:
            parts.append(
                "freshness p99 > 1 h" if math.isinf(p99) else f"freshness p99 ≤ {_seconds(p99)}"
            )
        return f"{self._label}: " + ", ".join(parts)


ReaderFactory = Callable[[Settings, dict[str, list[str]]], LagReader]


def _lag_reader(settings: Settings, groups: dict[str, list[str]]) -> LagReader:
    return LagReader(settings, groups=groups)


class StatusThread(threading.Thread):
    """Prints a :class:`StatusLine` every ``interval_s`` until :meth:`stop` (or exit)."""

    def __init__(
        self,
        settings: Settings,
        interval_s: float,
        *,
        out: TextIO | None = None,
        reader_factory: ReaderFactory = _lag_reader,
        status: StatusLine | None = None,
    ) -> None:
        super().__init__(name="auditstream-status", daemon=True)
        # A lag reading never takes longer than the interval (and never over lag_timeout_s).
        timeout = min(settings.observability.lag_timeout_s, max(interval_s, 1.0))
        self._settings = settings.model_copy(
            update={
                "observability": settings.observability.model_copy(
                    update={"lag_timeout_s": timeout}
                )
            }
        )
        self._interval = interval_s
        # The stream as it is now: Faust's worker later swaps sys.stderr for a proxy that
        # turns every write into a WARNING log record.
        self._out = out if out is not None else sys.stderr
        self._reader_factory = reader_factory
        self._status = status or StatusLine()
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def _read_lag(self, reader: LagReader | None) -> tuple[LagReader | None, Lag | None]:
        try:
            if reader is None:
                groups = {self._settings.groups.worker: [self._settings.topics.input]}
                reader = self._reader_factory(self._settings, groups)
            return reader, Lag.of(reader.poll())
        except Exception as exc:  # any failure: the line goes on without lag
            log.debug("worker lag not read: %s", exc)
            return reader, None

    def run(self) -> None:
        reader: LagReader | None = None
        try:
            while not self._stopped.wait(self._interval):
                reader, lag = self._read_lag(reader)
                if self._stopped.is_set():
                    break
                print(self._status.line(lag), file=self._out, flush=True)
        finally:
            if reader is not None:
                reader.close()


def start_status_thread(settings: Settings, interval_s: float) -> threading.Thread:
    """Start printing the worker's status line to stderr every ``interval_s`` seconds."""
    thread = StatusThread(settings, interval_s)
    thread.start()
    return thread
