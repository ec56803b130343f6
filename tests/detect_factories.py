"""Fixture factories for the detection tests: enriched event views and detectors."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from pipeline.stages.detect.base import US, Detector, EnrichedEventView
from pipeline.stages.detect.rules import Rules
from pipeline.stages.detect.stage import build_detectors

T0 = int(datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()) * US
LONDON = {"country": "GB", "lat": 51.5142, "lon": -0.0931, "asn": 20712, "as_org": "A&A"}
CHANGCHUN = {"country": "CN", "lat": 43.88, "lon": 125.3228, "asn": 4837, "as_org": "Unicom"}
_ids = itertools.count()


def view(at_s: float = 0.0, **fields: Any) -> EnrichedEventView:
    """An event ``at_s`` seconds after T0: a successful login by u1 from London by default."""
    base: dict[str, Any] = {
        "event_id": f"e{next(_ids):06d}",
        "occurred_us": T0 + int(at_s * US),
        "actor_id": "u1",
        "actor_type": "user",
        "action": "login",
        "outcome": "success",
        "source_ip": "81.2.69.160",
        "network_type": "public",
        **LONDON,
    }
    base.update(fields)
    return EnrichedEventView(**base)


def fail(at_s: float = 0.0, **fields: Any) -> EnrichedEventView:
    return view(at_s, outcome="failure", reason="invalid_password", **fields)


def detector(name: str, rules: Rules | None = None) -> Detector[Any]:
    for det in build_detectors(rules or Rules()):
        if det.name == name:
            return det
    raise KeyError(name)


class Runner:
    """Feeds events to one detector through its bytes interface, with rising offsets."""

    def __init__(self, det: Detector[Any]) -> None:
        self.det = det
        self.states: dict[str | None, bytes | None] = {}
        self.offset = 0
        self.alerts: list[Any] = []

    def __call__(self, event: EnrichedEventView, partition: int = 0) -> list[Any]:
        self.offset += 1
        entity = self.det.entity_of(event)
        state, alerts = self.det.observe(
            self.states.get(entity), event, ("access-events", partition, self.offset)
        )
        self.states[entity] = state
        self.alerts.extend(alerts)
        return alerts

    def opened(self) -> list[Any]:
        return [a for a in self.alerts if a.revision == 1]
