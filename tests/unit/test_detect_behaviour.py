from pipeline.stages.detect.base import US
from pipeline.stages.detect.rules import Rules
from tests.detect_factories import Runner, detector, view

DAY = 86400.0


def _office_worker(run, days=14, per_day=20):
    """Reads between 09:00 and 17:00 UTC (T0 is 12:00)."""
    for day in range(days):
        for i in range(per_day):
            run(view(day * DAY - 3 * 3600 + i * 1440, action="read", outcome="success"))


def test_off_hours_fires_at_three_in_the_morning_for_an_office_worker():
    run = Runner(detector("off_hours"))
    _office_worker(run)
    assert run.alerts == []
    [alert] = run(view(14 * DAY - 9 * 3600))  # 03:00 UTC
    assert alert.attributes["hour_utc"] == "03"
    assert alert.attributes["usual_hours_utc"].startswith("09")
    assert run(view(14 * DAY + 3600)) == []  # 13:00: usual


def test_off_hours_is_silent_until_enough_history():
    run = Runner(detector("off_hours"))
    _office_worker(run, days=5, per_day=50)  # 250 events, but only five days
    assert run(view(5 * DAY - 9 * 3600)) == []
    quiet = Runner(detector("off_hours"))
    _office_worker(quiet, days=9, per_day=10)  # nine days, but only 90 events
    assert quiet(view(9 * DAY - 9 * 3600)) == []


def test_off_hours_state_is_26_numbers_whatever_the_traffic():
    run = Runner(detector("off_hours"))
    _office_worker(run, days=30, per_day=40)
    assert len(run.states["u1"]) < 400


def test_mass_access_fires_at_fifty_reads_in_a_sliding_minute():
    run = Runner(detector("mass_access"))
    for i in range(49):
        assert run(view(30 + i, action="read")) == []  # 12:00:30 .. 12:01:18
    [alert] = run(view(30 + 59, action="read"))  # 50 within 60 s, straddling 12:01:00
    assert alert.attributes["reads_per_minute"] == "50"
    assert alert.first_seen_us < alert.last_seen_us


def test_mass_access_below_the_floor_or_outside_the_minute_is_silent():
    run = Runner(detector("mass_access"))
    for i in range(49):
        run(view(i, action="read"))
    assert run(view(60.5, action="read")) == []  # the first read fell out of the window
    assert run.alerts == []


def test_mass_access_needs_z_above_a_heavy_users_baseline():
    rules = Rules.model_validate({"detectors": {"mass_access": {"ewma_alpha": 0.1}}})
    run = Runner(detector("mass_access", rules))

    def minute_of(minute, reads):
        for i in range(reads):
            run(view(minute * 60 + i * 60 / reads, action="read", actor_id="svc"))

    for minute in range(60):  # an hour at 40 or 80 reads a minute: mean 60, sd 20
        minute_of(minute, 40 if minute % 2 else 80)
    run.alerts.clear()
    minute_of(60, 100)  # z = 2: normal for this one
    assert run.alerts == []
    minute_of(61, 250)
    assert run.opened() and float(run.opened()[0].attributes["z"]) >= 4


def test_mass_access_counts_a_late_burst_where_it_happened():
    run = Runner(detector("mass_access"))
    run(view(600, action="read"))
    alerts = [run(view(100 + i, action="read")) for i in range(50)]
    assert alerts[-1] and alerts[-1][0].first_seen_us == view(100).occurred_us // US * US
