"""Detection: pure detectors over one bounded state value per entity (see ``base``)."""

from pipeline.stages.detect.alerts import AlertRecord, AlertState, alert_id
from pipeline.stages.detect.base import (
    DetectError,
    Detector,
    DetectorGroup,
    EnrichedEventView,
    Envelope,
    Match,
    Position,
    StateError,
    Verdict,
)
from pipeline.stages.detect.rules import Rules, load_rules
from pipeline.stages.detect.stage import DetectStage, Outcome, build_detectors

__all__ = [
    "AlertRecord",
    "AlertState",
    "DetectError",
    "DetectStage",
    "Detector",
    "DetectorGroup",
    "EnrichedEventView",
    "Envelope",
    "Match",
    "Outcome",
    "Position",
    "Rules",
    "StateError",
    "Verdict",
    "alert_id",
    "build_detectors",
    "load_rules",
]
