"""The detector base: pure classes over one bounded state value per entity.

A :class:`Detector` sees one enriched event of one entity (a user, or a source
address for events that come through ``access-events-by-ip``) together with the
entity's state, and returns the new state and the alerts to publish::

    new_state, alerts = detector.observe(state, event, (topic, partition, offset))

The state value (DESIGN, Accounting: "State") is an :class:`Envelope`:

- ``applied``: the last applied offset per source partition (the watermark; an
  entity fed through the by-IP topic receives several source partitions);
- ``max_us`` and ``late``: the latest ``occurred_at`` applied, and how many
  events arrived more than the allowed lateness behind it (ignored, counted);
- ``outbox``: the last emitted revision of the most recent alerts, with the
  position that emitted it;
- ``parts``: each detector's own data (bounded by caps in the rules) and its
  open alert.

An event at or below the watermark is not applied again: the outbox entries
emitted at or after its position are returned again (same ``alert_id``, same
revision), so a replay neither counts twice nor loses an alert. A
:class:`DetectorGroup` runs several detectors of one entity kind over one
shared envelope, which is what the worker stores per entity; a single detector
is a group of one.

Windows are exact and slide on ``occurred_at``: a threshold is met when some
window of the rule's length that contains the new event holds enough events,
wherever the event falls (in order or late).

Errors::

    AuditstreamError
    └── DetectError        detection cannot go on
        └── StateError     a stored state value cannot be read (a bug, or foreign data)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import orjson

from pipeline.errors import AuditstreamError
from pipeline.stages.detect.alerts import (
    EPOCH,
    AlertRecord,
    AlertState,
    alert_id,
    higher,
    to_datetime,
)
from pipeline.stages.detect.rules import AlertRules, Rule

Position = tuple[str, int, int]  # (topic, partition, offset) of the source record
D = TypeVar("D")
US = 1_000_000
OUTBOX_ALERTS = 4  # alerts whose last revision the outbox keeps


class DetectError(AuditstreamError):
    """Detection cannot go on."""


class StateError(DetectError):
    """A stored state value cannot be read."""


def _micros(moment: Any) -> int:
    if isinstance(moment, datetime):
        delta = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) - EPOCH
        return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds
    return int(moment)


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, Mapping) else None


@dataclass(frozen=True, slots=True)
class EnrichedEventView:
    """What detectors read of an enriched event (``schemas/enriched_event.v2.avsc``)."""

    event_id: str
    occurred_us: int
    actor_id: str
    actor_type: str
    action: str
    outcome: str
    reason: str | None = None
    source_ip: str | None = None
    network_type: str | None = None
    country: str | None = None
    city: str | None = None
    lat: float | None = None
    lon: float | None = None
    asn: int | None = None
    as_org: str | None = None
    privileged: bool | None = None
    employment_status: str | None = None
    sensitivity: str | None = None
    service: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_enriched(cls, record: Mapping[str, Any]) -> EnrichedEventView:
        """From an EnrichedEvent record (as decoded, or as the processor builds it)."""
        event = record["event"]
        actor = event.get("actor") or {}
        source = event.get("source") or {}
        resource = event.get("resource") or {}
        geo = record.get("geo")
        location = _get(geo, "location")
        as_info = record.get("as_info")
        directory = record.get("directory")
        classification = record.get("classification")
        lat, lon = _get(location, "lat"), _get(location, "lon")
        return cls(
            event_id=str(event["event_id"]),
            occurred_us=_micros(event["occurred_at"]),
            actor_id=str(actor.get("id")),
            actor_type=str(actor.get("type") or "user"),
            action=str(event.get("action")),
            outcome=str(event.get("outcome")),
            reason=event.get("reason"),
            source_ip=source.get("ip"),
            network_type=record.get("network_type"),
            country=_get(geo, "country_iso_code"),
            city=_get(geo, "city_name"),
            lat=float(lat) if lat is not None else None,
            lon=float(lon) if lon is not None else None,
            asn=_get(as_info, "number"),
            as_org=_get(as_info, "organization"),
            privileged=_get(directory, "privileged"),
            employment_status=_get(directory, "employment_status"),
            sensitivity=_get(classification, "sensitivity"),
            service=_get(event.get("service"), "name"),
            resource_type=resource.get("type"),
            resource_id=resource.get("id"),
            attributes=event.get("attributes") or {},
        )

    @property
    def failed_login(self) -> bool:
        return self.action == "login" and self.outcome == "failure"

    @property
    def successful_login(self) -> bool:
        return self.action == "login" and self.outcome == "success"

    @property
    def public(self) -> bool:
        return self.network_type == "public"


@dataclass(frozen=True, slots=True)
class Match:
    """A detector's finding on one event; opens an alert or folds into the open one."""

    at_us: int
    first_us: int
    last_us: int
    event_ids: Sequence[str]
    count: int  # events this match brings (a whole window when it opens an alert)
    facts: Mapping[str, str]
    severity: str | None = None  # None: the rule's
    actor: str | None = None
    source_ip: str | None = None


class Verdict(StrEnum):
    APPLIED = "applied"
    REPLAY = "replay"  # at or below the watermark: the outbox again
    LATE = "late"  # beyond the allowed lateness: ignored and counted
    SKIPPED = "skipped"  # nothing any detector of the group looks at; state untouched


@dataclass(slots=True)
class Part(Generic[D]):
    """One detector's piece of an entity's state."""

    data: D
    open: AlertState | None = None


@dataclass(slots=True)
class Envelope:
    """The one state value of an entity (see the module docstring)."""

    applied: dict[int, int] = field(default_factory=dict)
    max_us: int = 0
    late: int = 0
    outbox: list[AlertState] = field(default_factory=list)
    parts: dict[str, Part[Any]] = field(default_factory=dict)


class Observation(NamedTuple):
    envelope: Envelope
    alerts: list[AlertRecord]
    verdict: Verdict
    opened: int  # alerts opened by this event (revision 1)


class Detector(ABC, Generic[D]):
    """One rule over one entity kind; subclasses say what to keep and when to match."""

    name: ClassVar[str]
    entity_type: ClassVar[str] = "user"  # or "source_ip"
    title_text: ClassVar[str]

    def __init__(self, rule: Rule, alerts: AlertRules, lateness_s: float = 3600.0) -> None:
        self.rule = rule
        self.alert_rules = alerts
        self.lateness_us = int(lateness_s * US)
        self.suppression_us = int((rule.suppression_s or alerts.suppression_s) * US)
        self.window_s: int | None = None
        self._group: DetectorGroup | None = None

    # -- what each detector defines --------------------------------------------------

    @abstractmethod
    def relevant(self, event: EnrichedEventView) -> bool:
        """Cheap: does this detector look at ``event`` at all?"""

    @abstractmethod
    def new_data(self) -> D: ...

    @abstractmethod
    def dump_data(self, data: D) -> Any:
        """``data`` as JSON-able values."""

    @abstractmethod
    def load_data(self, raw: Any) -> D: ...

    @abstractmethod
    def update(self, data: D, event: EnrichedEventView) -> Match | None:
        """Fold ``event`` into ``data`` (in place) and say whether it matches."""

    @abstractmethod
    def summary(self, alert: AlertState, entity: str) -> str:
        """One paragraph in plain words."""

    def title(self, alert: AlertState, entity: str) -> str:
        return f"{self.title_text}: {entity}"

    def entity_of(self, event: EnrichedEventView) -> str | None:
        return event.source_ip if self.entity_type == "source_ip" else event.actor_id

    # -- the pure interface ------------------------------------------------------------

    def observe(
        self, state: bytes | None, event: EnrichedEventView, position: Position
    ) -> tuple[bytes | None, list[AlertRecord]]:
        """The new state of ``event``'s entity and the alerts to publish."""
        if self._group is None:
            self._group = DetectorGroup([self], lateness_s=self.lateness_us / US)
        return self._group.observe(state, event, position)

    def record(self, alert: AlertState, entity: str) -> AlertRecord:
        return AlertRecord(
            alert_id=alert.alert_id,
            revision=alert.revision,
            detector=self.name,
            severity=alert.severity,
            entity_type=self.entity_type,
            entity_id=entity,
            title=self.title(alert, entity),
            summary=self.summary(alert, entity),
            first_seen_us=alert.first_us,
            last_seen_us=alert.last_us,
            event_count=alert.event_count,
            folded=alert.folded,
            event_ids=tuple(alert.event_ids),
            opened_by_partition=alert.opened_partition,
            opened_by_offset=alert.opened_offset,
            actor_id=alert.actor,
            source_ip=alert.source_ip,
            window_s=self.window_s,
            mitre_techniques=tuple(self.rule.mitre),
            compliance=tuple(self.rule.compliance),
            attributes=dict(alert.facts),
        )

    def fold(
        self, part: Part[D], match: Match, entity: str, partition: int, offset: int
    ) -> AlertState | None:
        """Open an alert for ``match`` or fold it into the open one; the revision to emit."""
        cap = self.alert_rules.max_evidence
        alert = part.open
        if alert is not None and abs(match.at_us - alert.first_us) < self.suppression_us:
            alert.event_count += 1
            alert.folded += 1
            alert.first_us = min(alert.first_us, match.first_us)
            alert.last_us = max(alert.last_us, match.last_us)
            for event_id in match.event_ids:
                if len(alert.event_ids) >= cap:
                    break
                if event_id not in alert.event_ids:
                    alert.event_ids.append(event_id)
            alert.severity = higher(alert.severity, match.severity or self.rule.severity)
            alert.facts.update(match.facts)
            if not alert.should_emit(self.alert_rules):
                return None
            alert.revision += 1
        else:
            alert = AlertState(
                detector=self.name,
                alert_id=alert_id(self.name, entity, partition, offset),
                revision=1,
                opened_partition=partition,
                opened_offset=offset,
                first_us=match.first_us,
                last_us=match.last_us,
                event_count=match.count,
                folded=0,
                event_ids=list(dict.fromkeys(match.event_ids))[:cap],
                severity=match.severity or self.rule.severity,
                facts=dict(match.facts),
                actor=match.actor,
                source_ip=match.source_ip,
                emitted_us=0,
                emit_partition=partition,
                emit_offset=offset,
            )
            part.open = alert
        alert.emitted_us = alert.last_us
        alert.emit_partition, alert.emit_offset = partition, offset
        return alert.copy()


class DetectorGroup:
    """Detectors of one entity kind over one shared :class:`Envelope` per entity."""

    def __init__(
        self,
        detectors: Sequence[Detector[Any]],
        *,
        lateness_s: float = 3600.0,
        retention_s: float = 400 * 86_400.0,
    ) -> None:
        kinds = {d.entity_type for d in detectors}
        if len(kinds) > 1:
            raise DetectError(f"one group holds one entity kind, not {sorted(kinds)}")
        self.detectors = tuple(detectors)
        self.by_name = {d.name: d for d in detectors}
        self.entity_type = kinds.pop() if kinds else "user"
        self.lateness_us = int(lateness_s * US)
        self.retention_us = int(retention_s * US)  # an entity silent this long is swept

    def entity_of(self, event: EnrichedEventView) -> str | None:
        return event.source_ip if self.entity_type == "source_ip" else event.actor_id

    def relevant(self, event: EnrichedEventView) -> bool:
        return self.entity_of(event) is not None and any(d.relevant(event) for d in self.detectors)

    # -- bytes -----------------------------------------------------------------------

    def observe(
        self, state: bytes | None, event: EnrichedEventView, position: Position
    ) -> tuple[bytes | None, list[AlertRecord]]:
        """Like :meth:`Detector.observe`, for every detector of the group at once."""
        envelope = self.decode(state) if state is not None else None
        observation = self.apply(envelope, event, position)
        if observation.verdict in (Verdict.SKIPPED, Verdict.REPLAY):
            return state, observation.alerts
        return self.encode(observation.envelope), observation.alerts

    def encode(self, envelope: Envelope) -> bytes:
        # orjson: the state is decoded and re-encoded for every event, and the
        # standard library's json made that most of detection's cost.
        return orjson.dumps(
            {
                "w": sorted(envelope.applied.items()),
                "m": envelope.max_us,
                "l": envelope.late,
                "o": [a.dump() for a in envelope.outbox],
                "d": {
                    name: [
                        self.by_name[name].dump_data(part.data),
                        part.open.dump() if part.open else None,
                    ]
                    for name, part in envelope.parts.items()
                    if name in self.by_name
                },
            },
            option=orjson.OPT_NON_STR_KEYS,
        )

    def decode(self, state: bytes) -> Envelope:
        try:
            raw = orjson.loads(state)
            parts: dict[str, Part[Any]] = {}
            for name, (data, open_alert) in raw["d"].items():
                detector = self.by_name.get(name)
                if detector is None:  # a detector since removed from the rules
                    continue
                parts[name] = Part(
                    detector.load_data(data),
                    AlertState.load(open_alert) if open_alert else None,
                )
            return Envelope(
                applied={int(p): int(o) for p, o in raw["w"]},
                max_us=int(raw["m"]),
                late=int(raw["l"]),
                outbox=[AlertState.load(a) for a in raw["o"]],
                parts=parts,
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise StateError(f"a detection state value cannot be read: {exc}") from exc

    # -- objects ----------------------------------------------------------------------

    def apply(
        self, envelope: Envelope | None, event: EnrichedEventView, position: Position
    ) -> Observation:
        """Apply ``event`` to ``envelope`` (changed in place; a new one for None)."""
        _topic, partition, offset = position
        if envelope is None:
            envelope = Envelope()
        entity = self.entity_of(event)
        done = envelope.applied.get(partition)
        if done is not None and offset <= done:
            again = [
                a
                for a in envelope.outbox
                if a.emit_partition != partition or a.emit_offset >= offset
            ]
            return Observation(envelope, self._render(again, entity), Verdict.REPLAY, 0)
        if entity is None:
            return Observation(envelope, [], Verdict.SKIPPED, 0)
        detectors = [d for d in self.detectors if d.relevant(event)]
        if not detectors:
            return Observation(envelope, [], Verdict.SKIPPED, 0)
        envelope.applied[partition] = offset
        if event.occurred_us < envelope.max_us - self.lateness_us:
            envelope.late += 1
            return Observation(envelope, [], Verdict.LATE, 0)
        if event.occurred_us > envelope.max_us:
            envelope.max_us = event.occurred_us
        emitted: list[AlertState] = []
        for detector in detectors:
            part = envelope.parts.get(detector.name)
            if part is None:
                part = envelope.parts[detector.name] = Part(detector.new_data())
            match = detector.update(part.data, event)
            if match is not None:
                alert = detector.fold(part, match, entity, partition, offset)
                if alert is not None:
                    emitted.append(alert)
        if not emitted:
            return Observation(envelope, [], Verdict.APPLIED, 0)
        ids = {a.alert_id for a in emitted}
        envelope.outbox = [a for a in envelope.outbox if a.alert_id not in ids] + emitted
        del envelope.outbox[:-OUTBOX_ALERTS]
        opened = sum(a.revision == 1 for a in emitted)
        return Observation(envelope, self._render(emitted, entity), Verdict.APPLIED, opened)

    def _render(self, alerts: list[AlertState], entity: str | None) -> list[AlertRecord]:
        records = []
        for alert in alerts:
            detector = self.by_name.get(alert.detector)
            if detector is not None:
                records.append(detector.record(alert, entity or ""))
        return records


# -- exact sliding windows over lists sorted by occurred_at (the first item) -----------

T = TypeVar("T", bound=tuple[Any, ...])


def insert(entries: list[T], item: T) -> int:
    """Insert keeping time order (late events land in place); the index inserted at."""
    i = len(entries)
    while i > 0 and entries[i - 1][0] > item[0]:
        i -= 1
    entries.insert(i, item)
    return i


def trim(entries: list[T], horizon_us: int, cap: int) -> None:
    """Drop entries older than ``horizon_us``, then the oldest beyond ``cap``."""
    drop = 0
    while drop < len(entries) and entries[drop][0] < horizon_us:
        drop += 1
    drop = max(drop, len(entries) - cap)
    if drop:
        del entries[:drop]


def window_with(entries: Sequence[T], index: int, n: int, window_us: int) -> tuple[int, int] | None:
    """``(lo, hi)`` of ``n`` entries spanning at most ``window_us`` and including ``index``."""
    for lo in range(max(0, index - n + 1), min(index, len(entries) - n) + 1):
        hi = lo + n - 1
        if entries[hi][0] - entries[lo][0] <= window_us:
            return lo, hi
    return None


def count_between(entries: Sequence[T], lo_us: int, hi_us: int) -> int:
    """How many entries fall in ``[lo_us, hi_us]``."""
    return sum(1 for e in entries if lo_us <= e[0] <= hi_us)


def when(us: int) -> str:
    """An event time in words: ``2026-01-05 10:00:01 UTC``."""
    return to_datetime(us).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(first_us: int, last_us: int) -> str:
    """A duration in words: ``95 seconds``, ``12 minutes``, ``3.5 hours``, ``120 days``."""
    seconds = (last_us - first_us) / US
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.0f} days"
