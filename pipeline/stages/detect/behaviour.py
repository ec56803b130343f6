"""Detectors 6-7, against the user's own habits: off-hours access and mass access.

- **Off-hours** (``off_hours``): a histogram of the user's activity per hour of
  the day (UTC; a user's own time zone shows in the shape). An event whose
  hour, with ``neighbour_hours`` either side, holds less than ``min_share`` of
  the user's history is off-hours. Silent until the histogram holds
  ``min_events`` events over ``min_days``; halved when it passes ``max_total``,
  so it follows a changing rhythm. 26 integers, whatever the traffic.
- **Mass access** (``mass_access``): reads, downloads, exports or listings in
  any 60-second window (at one-second resolution, sliding) at or above
  ``floor_per_min`` and at least ``z`` standard deviations above the user's
  exponentially weighted per-minute baseline (zero minutes count). Keeps
  one-second counts (at most ``max_tracked``) and the baseline's mean and
  variance.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.stages.detect.alerts import AlertState
from pipeline.stages.detect.base import US, Detector, EnrichedEventView, Match, when
from pipeline.stages.detect.rules import AlertRules, MassAccessRule, OffHoursRule

HOUR_US = 3600 * US


class Habits:
    """What :class:`OffHours` keeps."""

    __slots__ = ("first_us", "hours", "total")

    def __init__(self, first_us: int, total: int, hours: list[int]) -> None:
        self.first_us = first_us
        self.total = total
        self.hours = hours


def usual_hours(hours: list[int]) -> str:
    """The hours holding at least half an even share, as ranges: ``08-17``."""
    total = sum(hours) or 1
    busy = [h for h in range(24) if hours[h] / total >= 0.5 / 24]
    ranges: list[str] = []
    for h in busy:
        if ranges and (h - 1) in busy:
            start = ranges[-1].split("-")[0]
            ranges[-1] = f"{start}-{h:02d}"
        else:
            ranges.append(f"{h:02d}")
    return ", ".join(ranges) or "none"


class OffHours(Detector[Habits]):
    name = "off_hours"
    title_text = "Activity outside the user's usual hours"

    def __init__(self, rule: OffHoursRule, alerts: AlertRules, lateness_s: float = 3600.0):
        super().__init__(rule, alerts, lateness_s)
        self.min_events = rule.min_events
        self.min_us = int(rule.min_days * 86_400 * US)
        self.min_share = rule.min_share
        self.around = rule.neighbour_hours
        self.max_total = rule.max_total
        self.window_s = 3600 * (2 * rule.neighbour_hours + 1)

    def relevant(self, event: EnrichedEventView) -> bool:
        return event.actor_type == "user"

    def new_data(self) -> Habits:
        return Habits(0, 0, [0] * 24)

    def dump_data(self, data: Habits) -> Any:
        return [data.first_us, data.total, data.hours]

    def load_data(self, raw: Any) -> Habits:
        return Habits(int(raw[0]), int(raw[1]), [int(n) for n in raw[2]])

    def update(self, data: Habits, event: EnrichedEventView) -> Match | None:
        t = event.occurred_us
        hour = (t // HOUR_US) % 24
        if not data.first_us or t < data.first_us:
            data.first_us = t
        match = None
        if data.total >= self.min_events and t - data.first_us >= self.min_us:
            near = sum(data.hours[(hour + k) % 24] for k in range(-self.around, self.around + 1))
            if near < self.min_share * data.total:
                match = Match(
                    at_us=t,
                    first_us=t,
                    last_us=t,
                    event_ids=[event.event_id],
                    count=1,
                    facts={
                        "hour_utc": f"{hour:02d}",
                        "share_of_history": f"{near / data.total:.4f}",
                        "usual_hours_utc": usual_hours(data.hours),
                        "history_events": str(data.total),
                    },
                    actor=event.actor_id,
                    source_ip=event.source_ip,
                )
        data.hours[hour] += 1
        data.total += 1
        if data.total > self.max_total:
            data.hours = [n // 2 for n in data.hours]
            data.total = sum(data.hours)
        return match

    def summary(self, alert: AlertState, entity: str) -> str:
        f = alert.facts
        share = float(f.get("share_of_history", "0"))
        return (
            f"User {entity} was active at {when(alert.first_us)} (hour {f.get('hour_utc')} UTC), "
            f"an hour that, with the hours next to it, holds {share:.1%} of the "
            f"{f.get('history_events')} events this user has made; the user is usually active "
            f"during the hours {f.get('usual_hours_utc')} UTC. {alert.event_count} events "
            "are in this alert. Activity at such times can be someone else using the account."
        )


class Baseline:
    """What :class:`MassAccess` keeps."""

    __slots__ = ("buckets", "count", "mean", "minute", "var")

    def __init__(
        self, buckets: list[list[int]], minute: int, count: int, mean: float, var: float
    ) -> None:
        self.buckets = buckets  # [second, reads], in time order
        self.minute = minute  # the latest minute seen, and its reads so far
        self.count = count
        self.mean = mean  # EWMA of reads per minute, and its variance
        self.var = var


class MassAccess(Detector[Baseline]):
    name = "mass_access"
    title_text = "Mass data access"

    def __init__(self, rule: MassAccessRule, alerts: AlertRules, lateness_s: float = 3600.0):
        super().__init__(rule, alerts, lateness_s)
        self.actions = frozenset(rule.actions)
        self.floor = rule.floor_per_min
        self.z = rule.z
        self.alpha = rule.ewma_alpha
        self.min_std = rule.min_std
        self.cap = rule.max_tracked
        self.lateness_s = int(lateness_s)
        self.window_s = 60

    def relevant(self, event: EnrichedEventView) -> bool:
        return event.action in self.actions

    def new_data(self) -> Baseline:
        return Baseline([], -1, 0, 0.0, 0.0)

    def dump_data(self, data: Baseline) -> Any:
        return [data.buckets, data.minute, data.count, data.mean, data.var]

    def load_data(self, raw: Any) -> Baseline:
        return Baseline([[int(s), int(n)] for s, n in raw[0]], *raw[1:3], *raw[3:5])

    def _learn(self, data: Baseline, minute: int) -> None:
        """Close the minutes before ``minute`` into the baseline."""
        if data.minute < 0:
            data.minute = minute
            return
        if minute <= data.minute:
            return
        diff = data.count - data.mean
        step = self.alpha * diff
        data.mean += step
        data.var = (1 - self.alpha) * (data.var + diff * step)
        quiet = minute - data.minute - 1  # minutes without reads, in closed form
        if quiet:
            decay = (1 - self.alpha) ** quiet
            data.var = decay * (data.var + data.mean * data.mean * (1 - decay))
            data.mean *= decay
        data.minute, data.count = minute, 0

    def update(self, data: Baseline, event: EnrichedEventView) -> Match | None:
        t = event.occurred_us
        second = t // US
        self._learn(data, second // 60)
        if second // 60 == data.minute:
            data.count += 1
        buckets = data.buckets
        i = len(buckets)
        while i > 0 and buckets[i - 1][0] > second:
            i -= 1
        if i > 0 and buckets[i - 1][0] == second:
            buckets[i - 1][1] += 1
        else:
            buckets.insert(i, [second, 1])
        start, reads = self._busiest(buckets, second)
        std = max(math.sqrt(max(data.var, 0.0)), self.min_std)
        score = (reads - data.mean) / std
        match = None
        if reads >= self.floor and score >= self.z:
            match = Match(
                at_us=t,
                first_us=start * US,
                last_us=t,
                event_ids=[event.event_id],
                count=reads,
                facts={
                    "reads_per_minute": str(reads),
                    "baseline_per_minute": f"{data.mean:.2f}",
                    "z": f"{score:.1f}",
                    "last_resource": f"{event.service}/{event.resource_id}",
                },
                actor=event.actor_id,
                source_ip=event.source_ip,
            )
        horizon = buckets[-1][0] - 60 - self.lateness_s
        drop = 0
        while drop < len(buckets) and buckets[drop][0] < horizon:
            drop += 1
        drop = max(drop, len(buckets) - self.cap)
        if drop:
            del buckets[:drop]
        return match

    @staticmethod
    def _busiest(buckets: list[list[int]], second: int) -> tuple[int, int]:
        """The busiest 60-second window holding ``second``: (its first second, its reads)."""
        near = [b for b in buckets if second - 59 <= b[0] <= second + 59]
        if near[-1][0] == second:  # in order: the window ending now holds all the others
            return max(second - 59, near[0][0]), sum(n for _, n in near)
        best = (second, 0)
        for a, (start, _) in enumerate(near):
            if start > second:
                break
            reads = sum(n for s, n in near[a:] if s <= start + 59)
            if reads > best[1]:
                best = (start, reads)
        return best

    def summary(self, alert: AlertState, entity: str) -> str:
        f = alert.facts
        return (
            f"User {entity} read, listed or exported {f.get('reads_per_minute')} items within "
            f"one minute at {when(alert.first_us)}, against a usual "
            f"{f.get('baseline_per_minute')} per minute (z = {f.get('z')}); "
            f"{alert.event_count} reads are counted in this alert up to {when(alert.last_us)}, "
            f"the last of {f.get('last_resource')}. A sudden bulk read is how data is taken "
            "out; check what was read and whether the user meant to."
        )
