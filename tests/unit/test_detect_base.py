import json

import pytest

from pipeline.stages.dedupe import DictStore
from pipeline.stages.detect.alerts import alert_id
from pipeline.stages.detect.base import DetectorGroup, StateError, Verdict
from pipeline.stages.detect.rules import Rules
from pipeline.stages.detect.stage import DetectStage, build_detectors
from tests.detect_factories import Runner, detector, fail, view


def _burst(det, count, events=None):
    events = events or [fail(i) for i in range(count)]
    state, out = None, []
    for i, event in enumerate(events):
        state, alerts = det.observe(state, event, ("access-events", 0, 1 + i))
        out.append(alerts)
    return state, out


def test_alert_id_is_a_hash_of_detector_entity_and_opening_position():
    events = [fail(i) for i in range(8)]
    _, out = _burst(detector("brute_force_user"), 8, events)
    [alert] = out[-1]
    assert alert.alert_id == alert_id("brute_force_user", "u1", 0, 8)
    assert alert.opened_by_partition == 0 and alert.opened_by_offset == 8
    # the same records processed again from scratch give the same alert, byte for byte
    _, again = _burst(detector("brute_force_user"), 8, events)
    assert again[-1][0] == alert


def test_a_replayed_event_is_not_counted_twice_and_re_emits_its_alert():
    det = detector("brute_force_user")
    state, out = _burst(det, 8)
    [alert] = out[-1]
    # the changelog ran ahead: the input is read again from offset 8
    event = fail(7)
    same_state, alerts = det.observe(state, event, ("access-events", 0, 8))
    assert same_state == state
    assert alerts == [alert]
    # and a replay from before the alert's record re-emits it too (it may never have left)
    _, alerts = det.observe(state, fail(3), ("access-events", 0, 4))
    assert alerts == [alert]
    # replaying offset 8 again and again never opens a second alert
    for _ in range(3):
        state, alerts = det.observe(state, event, ("access-events", 0, 8))
        assert [a.alert_id for a in alerts] == [alert.alert_id]
        assert alerts[0].revision == 1


def test_the_watermark_is_kept_per_source_partition():
    det = detector("brute_force_ip")
    state = None
    for i in range(4):  # offsets 1..4 on partition 0 and 1..4 on partition 3
        for partition in (0, 3):
            state, alerts = det.observe(
                state, fail(i, actor_id=f"u{partition}"), ("access-events", partition, i + 1)
            )
    assert alerts and alerts[0].opened_by_partition == 3 and alerts[0].opened_by_offset == 4
    envelope = DetectorGroup([det]).decode(state)
    assert envelope.applied == {0: 4, 3: 4}


def test_events_beyond_the_lateness_are_ignored_and_counted():
    det = detector("brute_force_user")
    run = Runner(det)
    run(fail(7200))
    for i in range(8):
        assert run(fail(i)) == []  # two hours late: ignored
    envelope = DetectorGroup([det]).decode(run.states["u1"])
    assert envelope.late == 8
    assert run(fail(7200 - 3599)) == []  # within the hour: applied
    assert DetectorGroup([det]).decode(run.states["u1"]).late == 8


def test_state_stays_bounded_under_an_attack_of_many_events():
    det = detector("brute_force_user")
    run = Runner(det)
    for i in range(5_000):
        run(fail(i * 0.01))
    assert len(run.states["u1"]) < 8_000
    assert len(run.opened()) == 1
    assert len(run.alerts) < 40  # revisions thinned out, not one per event


def test_suppression_window_ends_and_a_new_alert_opens():
    run = Runner(detector("brute_force_user"))
    for i in range(8):
        run(fail(i))
    for i in range(8):
        run(fail(3700 + i))
    first, second = run.opened()
    assert first.alert_id != second.alert_id


def test_irrelevant_events_leave_the_state_untouched():
    det = detector("brute_force_user")
    state, _ = _burst(det, 3)
    assert det.observe(state, view(10), ("access-events", 0, 99)) == (state, [])


def test_a_state_that_cannot_be_read_is_a_state_error():
    det = detector("brute_force_user")
    with pytest.raises(StateError):
        det.observe(b"not json", fail(0), ("access-events", 0, 1))


def test_state_of_a_removed_detector_is_dropped():
    group = DetectorGroup([detector("brute_force_user"), detector("off_hours")])
    state, _ = group.observe(None, fail(0), ("access-events", 0, 1))
    assert set(json.loads(state)["d"]) == {"brute_force_user", "off_hours"}
    alone = DetectorGroup([detector("brute_force_user")])
    assert set(alone.decode(state).parts) == {"brute_force_user"}


def test_the_stage_keys_users_and_addresses_and_writes_back_changes():
    stage = DetectStage(Rules())
    users, ips = DictStore(), DictStore()
    alerts = []
    for i in range(8):
        event = fail(i, actor_id="u7", source_ip="89.160.20.1")
        position = ("access-events", 2, 100 + i)
        out = stage.observe(stage.users, users, event, position)
        assert out.key == b"u7" and out.verdict is Verdict.APPLIED
        assert stage.needs_by_ip(event)
        alerts += out.alerts + stage.observe(stage.ips, ips, event, position).alerts
    assert {a.detector for a in alerts} == {"brute_force_user", "brute_force_ip"}
    assert set(users.data) == {b"u7"} and set(ips.data) == {b"89.160.20.1"}
    assert not stage.needs_by_ip(view(0))
    replay = stage.observe(stage.users, users, fail(7, actor_id="u7"), ("access-events", 2, 107))
    assert replay.verdict is Verdict.REPLAY and replay.value is None
    assert [a.detector for a in replay.alerts] == ["brute_force_user"]


def test_sweep_deletes_entities_silent_beyond_retention():
    stage = DetectStage(Rules())
    store = DictStore()
    stage.observe(stage.users, store, fail(0, actor_id="old"), ("access-events", 0, 1))
    stage.observe(stage.users, store, fail(400 * 86400, actor_id="new"), ("access-events", 0, 2))
    watermark = fail(400 * 86400 + 3600).occurred_us
    deleted, cursor = stage.sweep(stage.users, store, watermark, None, 10)
    assert deleted == [b"old"] and cursor is None
    assert set(store.data) == {b"new"}


def test_every_detector_is_built_and_each_can_be_disabled():
    names = {d.name for d in build_detectors(Rules())}
    assert len(names) == 11
    rules = Rules.model_validate({"detectors": {"off_hours": {"enabled": False}}})
    assert "off_hours" not in {d.name for d in build_detectors(rules)}
