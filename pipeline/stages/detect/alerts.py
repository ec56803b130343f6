"""Alerts: what an open alert keeps in state, and the Avro record it becomes.

- ``alert_id`` = SHA-256 over (detector, entity, partition, offset of the record
  that opened the alert), so reprocessing after a crash yields the same id
  (DESIGN, Accounting: "State").
- One open alert per detector and entity per suppression window: a later match
  folds into it (``event_count``, ``folded``, the time window and the evidence
  grow) and raises its ``revision``. To keep an attack of millions of events
  from becoming millions of records, the first ``emit_first`` folds are each
  emitted, then folds whose count is a power of two, or that come
  ``update_every_s`` of event time after the last emitted revision.
- The record follows ``schemas/alert.v2.avsc``; its summary and title are
  written by the detector from the facts kept in the alert, so the same state
  always renders the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.stages.detect.rules import SEVERITIES, AlertRules

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def alert_id(detector: str, entity: str, partition: int, offset: int) -> str:
    """The deterministic id of the alert opened by the record at ``partition``/``offset``."""
    key = f"{detector}\x1f{entity}\x1f{partition}\x1f{offset}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def to_datetime(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def higher(a: str, b: str) -> str:
    """The more severe of two severities."""
    return a if SEVERITIES.index(a) >= SEVERITIES.index(b) else b


@dataclass(slots=True)
class AlertState:
    """One alert as kept in an entity's state: small, bounded and enough to render it."""

    detector: str
    alert_id: str
    revision: int
    opened_partition: int
    opened_offset: int
    first_us: int
    last_us: int
    event_count: int
    folded: int
    event_ids: list[str]
    severity: str
    facts: dict[str, str]
    actor: str | None
    source_ip: str | None
    emitted_us: int  # event time of the last emitted revision
    emit_partition: int  # the record that emitted the last revision
    emit_offset: int

    def copy(self) -> AlertState:
        return replace(self, event_ids=list(self.event_ids), facts=dict(self.facts))

    def dump(self) -> list[Any]:
        return [getattr(self, name) for name in _ALERT_FIELDS]

    @classmethod
    def load(cls, raw: list[Any]) -> AlertState:
        return cls(*raw)

    def should_emit(self, rules: AlertRules) -> bool:
        """After a fold: is this a revision worth sending (see the module docstring)?"""
        if self.folded <= rules.emit_first or self.folded & (self.folded - 1) == 0:
            return True
        return self.last_us - self.emitted_us >= rules.update_every_s * 1_000_000


_ALERT_FIELDS = tuple(f.name for f in fields(AlertState))


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert as published to the alerts topic (``schemas/alert.v2.avsc``)."""

    alert_id: str
    revision: int
    detector: str
    severity: str
    entity_type: str
    entity_id: str
    title: str
    summary: str
    first_seen_us: int
    last_seen_us: int
    event_count: int
    folded: int
    event_ids: tuple[str, ...]
    opened_by_partition: int
    opened_by_offset: int
    actor_id: str | None
    source_ip: str | None
    window_s: int | None
    mitre_techniques: tuple[str, ...]
    compliance: tuple[str, ...]
    attributes: Mapping[str, str] = field(default_factory=dict)

    def to_avro(self) -> dict[str, Any]:
        """The record as fastavro writes it with ``alert.v2``."""
        return {
            "alert_id": self.alert_id,
            "revision": self.revision,
            "detector": self.detector,
            "severity": self.severity,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "summary": self.summary,
            "first_seen": to_datetime(self.first_seen_us),
            "last_seen": to_datetime(self.last_seen_us),
            "event_count": self.event_count,
            "event_ids": list(self.event_ids),
            "opened_by_partition": self.opened_by_partition,
            "opened_by_offset": self.opened_by_offset,
            "attributes": dict(self.attributes),
            "title": self.title,
            "folded": self.folded,
            "actor_id": self.actor_id,
            "source_ip": self.source_ip,
            "window_seconds": self.window_s,
            "mitre_techniques": list(self.mitre_techniques),
            "compliance": list(self.compliance),
        }
