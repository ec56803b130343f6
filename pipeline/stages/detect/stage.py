"""The detection stage: every enabled detector, grouped by the entity it keys on.

The worker keeps one state value per entity in a key-value store per input
partition (a Faust table on RocksDB with a changelog, like dedupe's):

- **users** (``entity_type`` ``user``), keyed by ``actor.id``: the input is
  keyed by actor, so a user's events arrive on one partition, in order;
- **source addresses** (``source_ip``), keyed by ``source.ip``: fed from
  ``access-events-by-ip``, whose records carry the source partition and
  offset; only events :meth:`DetectStage.needs_by_ip` accepts need to go there.

``DetectStage.observe(group, store, event, position, cache)`` reads the
entity's value, applies the event and returns the alerts and the value to write
back (and to the changelog) when it changed. Alerts opened are counted in
``auditstream_alerts_total{detector,severity}``; events beyond the allowed
lateness in ``auditstream_events_total{stage="detect",result="late"}``.

An :class:`EntityCache` keeps the decoded values of the most recently seen
entities of one store, so an active entity is not decoded again for every
event. It holds exactly what the store holds (it is filled from reads and
writes of the store), so its owner clears it whenever someone else may write
the store: on every rebalance, when Faust recovers or stands by for a table
partition.

``DetectStage.sweep`` deletes entities silent for longer than their group's
retention (users: ``alerts.retention_days``; source addresses, whose windows
are minutes: ``alerts.address_retention_days``), on event time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.stages.dedupe import Store
from pipeline.stages.detect.alerts import AlertRecord
from pipeline.stages.detect.auth import (
    BruteForce,
    BruteForceByIp,
    PasswordSpraying,
    SuccessAfterFailures,
)
from pipeline.stages.detect.base import (
    US,
    Detector,
    DetectorGroup,
    EnrichedEventView,
    Envelope,
    Position,
    Verdict,
)
from pipeline.stages.detect.behaviour import MassAccess, OffHours
from pipeline.stages.detect.privilege import (
    DormantAccount,
    FirstRestrictedAccess,
    PrivilegeEscalation,
)
from pipeline.stages.detect.rules import Rules, load_rules
from pipeline.stages.detect.travel import ImpossibleTravel, NewCountryOrAsn
from pipeline.telemetry import ALERTS, EVENTS


def build_detectors(rules: Rules, lateness_s: float = 3600.0) -> list[Detector[Any]]:
    """Every enabled detector, configured from ``rules``."""
    d, a = rules.detectors, rules.alerts
    candidates: list[Detector[Any]] = [
        BruteForce(d.brute_force_user, a, lateness_s),
        BruteForceByIp(d.brute_force_ip, a, lateness_s),
        PasswordSpraying(d.password_spraying, a, lateness_s),
        SuccessAfterFailures(d.success_after_failures, a, lateness_s),
        ImpossibleTravel(d.impossible_travel, a, lateness_s),
        NewCountryOrAsn(d.new_country_or_asn, a, lateness_s),
        OffHours(d.off_hours, a, lateness_s),
        MassAccess(d.mass_access, a, lateness_s),
        PrivilegeEscalation(d.privilege_escalation, a, lateness_s),
        DormantAccount(d.dormant_account, a, lateness_s),
        FirstRestrictedAccess(d.first_restricted_access, a, lateness_s),
    ]
    return [det for det in candidates if det.rule.enabled]


@dataclass(frozen=True)
class Outcome:
    """What one event did to one entity: the alerts to send and the value to store."""

    alerts: list[AlertRecord]
    key: bytes
    value: bytes | None  # None: nothing to write (skipped, or a replay)
    verdict: Verdict


class EntityCache:
    """Decoded state values of one store, the least recently used dropped beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values: OrderedDict[bytes, Envelope] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: bytes) -> Envelope | None:
        envelope = self._values.get(key)
        if envelope is None:
            self.misses += 1
        else:
            self.hits += 1
            self._values.move_to_end(key)
        return envelope

    def put(self, key: bytes, envelope: Envelope) -> None:
        self._values[key] = envelope
        self._values.move_to_end(key)
        if len(self._values) > self.capacity:
            self._values.popitem(last=False)

    def drop(self, key: bytes) -> None:
        self._values.pop(key, None)

    def clear(self) -> None:
        self._values.clear()


class DetectStage:
    """The configured detectors in two groups; see the module docstring."""

    def __init__(self, rules: Rules, lateness_s: float = 3600.0) -> None:
        detectors = build_detectors(rules, lateness_s)
        self.rules = rules
        day_s = 86_400.0
        self.users = DetectorGroup(
            [x for x in detectors if x.entity_type == "user"],
            lateness_s=lateness_s,
            retention_s=rules.alerts.retention_days * day_s,
        )
        self.ips = DetectorGroup(
            [x for x in detectors if x.entity_type == "source_ip"],
            lateness_s=lateness_s,
            retention_s=rules.alerts.address_retention_days * day_s,
        )
        looks_back_us = max(
            (d.suppression_us + (d.window_s or 0) * US for d in self.ips.detectors), default=0
        ) + int(lateness_s * US)
        if self.ips.detectors and self.ips.retention_us < looks_back_us:
            raise ConfigError(
                f"alerts.address_retention_days ({rules.alerts.address_retention_days:g}) is "
                f"shorter than the address detectors look back ({looks_back_us / US / 86_400:.2f} "
                "days: longest window + suppression + allowed lateness); raise it"
            )
        self._ok = EVENTS.labels(stage="detect", result="ok")
        self._late = EVENTS.labels(stage="detect", result="late")

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectStage:
        path: Path | None = settings.detect.rules_path
        return cls(load_rules(path), settings.worker.max_lateness_s)

    @property
    def groups(self) -> tuple[DetectorGroup, DetectorGroup]:
        return self.users, self.ips

    def needs_by_ip(self, event: EnrichedEventView) -> bool:
        """Does ``event`` need to go through ``access-events-by-ip``?"""
        return self.ips.relevant(event)

    @staticmethod
    def key(group: DetectorGroup, event: EnrichedEventView) -> bytes | None:
        entity = group.entity_of(event)
        return entity.encode() if entity is not None else None

    def observe(
        self,
        group: DetectorGroup,
        store: Store,
        event: EnrichedEventView,
        position: Position,
        cache: EntityCache | None = None,
    ) -> Outcome:
        """Apply ``event`` to its entity's value in ``store`` (written there when changed)."""
        key = self.key(group, event)
        if key is None:
            return Outcome([], b"", None, Verdict.SKIPPED)
        envelope = cache.get(key) if cache is not None else None
        if envelope is None:
            state = store.get(key)
            if state is not None:
                envelope = group.decode(state)
                if cache is not None:
                    cache.put(key, envelope)
        observation = group.apply(envelope, event, position)
        value = None
        if observation.verdict in (Verdict.APPLIED, Verdict.LATE):
            value = group.encode(observation.envelope)
            store.put(key, value)
            if cache is not None:
                cache.put(key, observation.envelope)
        if observation.verdict is Verdict.LATE:
            self._late.inc()
        elif observation.verdict is Verdict.APPLIED:
            self._ok.inc()
        if observation.opened:
            for alert in observation.alerts:
                if alert.revision == 1:
                    ALERTS.labels(detector=alert.detector, severity=alert.severity).inc()
        return Outcome(observation.alerts, key, value, observation.verdict)

    def sweep(
        self,
        group: DetectorGroup,
        store: Store,
        watermark_us: int,
        start: bytes | None,
        limit: int,
        cache: EntityCache | None = None,
    ) -> tuple[list[bytes], bytes | None]:
        """Delete entities silent for the group's retention before ``watermark_us``.

        Scans at most ``limit`` keys from ``start``; returns the keys deleted
        (write each as a changelog tombstone) and where the next sweep starts.
        """
        horizon = watermark_us - group.retention_us
        expired: list[bytes] = []
        scanned, last = 0, None
        items: Iterator[tuple[bytes, bytes]] = store.scan(start, limit)
        for key, value in items:
            scanned += 1
            last = key
            if group.decode(value).max_us < horizon:
                expired.append(key)
        for key in expired:
            store.delete(key)
            if cache is not None:
                cache.drop(key)
        return expired, (last + b"\x00" if scanned == limit and last else None)
