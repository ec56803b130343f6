from datetime import UTC, datetime

from pipeline.simulate import Simulator, daily_rhythm
from pipeline.stages.validate import validate

START = datetime(2026, 1, 5, tzinfo=UTC)


def _events(seed: int, count: int) -> list[dict]:
    return [e for _, e in Simulator(seed).events(count=count, rate=100, start=START, speed=60)]


def test_same_seed_gives_the_same_events():
    assert _events(7, 50) == _events(7, 50)
    assert _events(7, 50) != _events(8, 50)


def test_every_simulated_event_is_valid():
    far_future_ms = int(datetime(2030, 1, 1, tzinfo=UTC).timestamp() * 1000)
    for event in _events(1, 2000):
        validate(event, record_timestamp_ms=far_future_ms, max_future_skew_s=300)


def test_traffic_mixes_outcomes_actions_and_actors():
    events = _events(3, 5000)
    failures = sum(e["outcome"] == "failure" for e in events) / len(events)
    assert 0.02 < failures < 0.15
    assert {"login", "read", "write", "delete"} <= {e["action"] for e in events}
    assert len({e["actor"]["id"] for e in events}) > 300
    assert {e["actor"]["type"] for e in events} == {"user", "service"}
    assert len({e["event_id"] for e in events}) == len(events)


def test_daily_rhythm_is_busy_in_the_afternoon_and_quiet_at_night():
    assert daily_rhythm(START.replace(hour=14)) > 1.5
    assert daily_rhythm(START.replace(hour=3)) < 0.5
