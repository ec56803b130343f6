"""A reduced quality run: every detector finds every injected attack, and nothing else.

40 users for 14 warm-up days and 2 measured days, an attack an hour; the full
run is ``python -m pipeline.stages.detect.quality``.
"""

from datetime import timedelta

import pytest

from pipeline.scenarios import KINDS
from pipeline.stages.detect.quality import QualityReport, measure
from pipeline.stages.detect.rules import Rules
from pipeline.stages.detect.stage import DetectStage


@pytest.fixture(scope="module")
def report() -> QualityReport:
    return measure(
        seed=1,
        users=40,
        service_accounts=4,
        rate=0.025,
        warmup_days=14,
        measure_days=2,
        every=timedelta(hours=1),
    )


def test_every_detector_is_measured_on_injected_scenarios(report: QualityReport) -> None:
    names = {d.name for g in DetectStage(Rules()).groups for d in g.detectors}
    assert set(report.detectors) == names
    assert report.scenarios >= 4 * len(KINDS)
    assert all(q.scenarios >= 4 for q in report.detectors.values()), report.table()


def test_every_injected_scenario_is_detected(report: QualityReport) -> None:
    assert report.misses == [], report.table()
    assert all(q.recall == 1.0 for q in report.detectors.values()), report.table()


def test_normal_traffic_raises_no_alert_after_the_warm_up(report: QualityReport) -> None:
    assert report.normal_measured > 3000
    assert all(q.false_alerts == 0 for q in report.detectors.values()), report.table()
    assert report.meets_goals
