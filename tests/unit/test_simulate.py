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


def _day(seed: int = 1) -> list[dict]:
    """A simulated day at 0.2 events a second."""
    return [e for _, e in Simulator(seed).events(count=17_000, rate=0.2, start=START, speed=1)]


def test_users_the_directory_marks_terminated_or_on_leave_never_act() -> None:
    roles = Simulator(1).roles
    assert roles.terminated and roles.on_leave
    assert not {e["actor"]["id"] for e in _day()} & roles.absent


def test_only_privileged_users_administer_the_admin_console() -> None:
    roles = Simulator(1).roles
    admins = {
        e["actor"]["id"]
        for e in _day()
        if e["service"]["name"] == "admin-console"
        and e["action"] in ("admin", "grant", "revoke")
        and e["actor"]["type"] == "user"
    }
    assert admins and admins <= roles.privileged


def test_only_cleared_departments_touch_restricted_resources() -> None:
    events = _day()
    cards = {e["attributes"]["department"] for e in events if e["resource"]["id"] == "cards"}
    backups = {e["attributes"]["department"] for e in events if e["resource"]["id"] == "backups"}
    assert cards == {"finance", "it"}  # it: the service accounts
    assert backups == {"it"}


def test_office_hours_users_act_only_in_their_hours() -> None:
    simulator = Simulator(1)
    hours = {a.id: a.hours for a in simulator.actors}
    office = 0
    for event in _day():
        allowed = hours[event["actor"]["id"]]
        if allowed is not None:
            office += 1
            assert event["occurred_at"].hour in allowed
    assert office > 1000
    assert sum(h is not None for h in hours.values()) > 100
