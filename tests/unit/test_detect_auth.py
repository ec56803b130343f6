from pipeline.stages.detect.base import US
from tests.detect_factories import Runner, detector, fail, view


def test_brute_force_fires_exactly_at_the_threshold():
    run = Runner(detector("brute_force_user"))
    for i in range(7):
        assert run(fail(i)) == []
    [alert] = run(fail(7))
    assert alert.detector == "brute_force_user"
    assert alert.event_count == 8 and len(alert.event_ids) == 8
    assert alert.entity_id == "u1" and alert.severity == "high"
    assert alert.mitre_techniques == ("T1110.001",)
    assert "PCI DSS 10.2.4" in alert.compliance


def test_brute_force_window_is_inclusive_at_two_minutes_and_not_beyond():
    at_edge = Runner(detector("brute_force_user"))
    for i in range(7):
        at_edge(fail(i))
    assert at_edge(fail(120))  # 8 failures from t=0 to t=120 s exactly
    beyond = Runner(detector("brute_force_user"))
    for i in range(7):
        beyond(fail(i))
    assert beyond(fail(120.000001)) == []


def test_a_burst_straddling_a_tumbling_edge_fires():
    run = Runner(detector("brute_force_user"))
    # 4 failures before 12:02:00 and 4 after: every fixed 2-minute bucket holds only 4.
    for at in (100, 105, 110, 115, 125, 130, 135, 140):
        run(fail(at))
    assert len(run.opened()) == 1


def test_out_of_order_failures_are_counted_where_they_belong():
    run = Runner(detector("brute_force_user"))
    for at in (50, 60, 70, 80, 90, 100, 110):
        run(fail(at))
    [alert] = run(fail(40))  # late, but within the window of the others
    assert alert.first_seen_us < alert.last_seen_us
    assert alert.last_seen_us - alert.first_seen_us == 70 * US


def test_brute_force_by_ip_counts_failures_across_users():
    run = Runner(detector("brute_force_ip"))
    for i in range(8):
        run(fail(i, actor_id=f"u{i}", source_ip="10.0.0.5", network_type="private"))
    [alert] = run.opened()
    assert alert.entity_type == "source_ip" and alert.entity_id == "10.0.0.5"


def test_later_failures_fold_into_the_open_alert_with_fewer_revisions_over_time():
    run = Runner(detector("brute_force_user"))
    for i in range(26):  # opens at the 8th; folds 1-18
        run(fail(i))
    assert len(run.opened()) == 1
    assert {a.alert_id for a in run.alerts} == {run.opened()[0].alert_id}
    # folds 1-10 each emitted, then the 16th (a power of two); 11-15 and 17-18 held back
    assert [a.folded for a in run.alerts] == [0, *range(1, 11), 16]
    last = run.alerts[-1]
    assert last.revision == 12 and last.event_count == 24
    assert run(fail(26 + 60)) and run.alerts[-1].revision == 13  # a minute later: emitted


def test_password_spraying_needs_five_distinct_users():
    run = Runner(detector("password_spraying"))
    for i in range(4):
        run(fail(i * 60, actor_id=f"u{i}", source_ip="175.16.199.9"))
    for i in range(10):  # the same user again does not count
        assert run(fail(300 + i, actor_id="u0", source_ip="175.16.199.9")) == []
    [alert] = run(fail(1200, actor_id="u9", source_ip="175.16.199.9"))
    assert alert.attributes["distinct_users"] == "5"
    assert alert.mitre_techniques == ("T1110.003",)


def test_password_spraying_window_edge_with_a_late_attempt():
    for late_at, fires in ((1200.0, True), (1200.000001, False)):
        run = Runner(detector("password_spraying"))
        for i in range(4):
            run(fail(i * 0.1, actor_id=f"u{i}", source_ip="175.16.199.9"))
        assert run(fail(1203.5, actor_id="u9", source_ip="175.16.199.9")) == []
        # arrives after u9 but happened before it: the window [0, 1200] holds five users
        assert bool(run(fail(late_at, actor_id="u8", source_ip="175.16.199.9"))) is fires


def test_success_after_five_failures_fires_and_four_do_not():
    run = Runner(detector("success_after_failures"))
    for i in range(4):
        run(fail(i))
    assert run(view(10)) == []
    run(fail(20))
    [alert] = run(view(30))
    assert alert.severity == "critical"
    assert alert.attributes["failures_before"] == "5"
    assert {"T1110", "T1078"} <= set(alert.mitre_techniques)


def test_success_after_failures_respects_the_ten_minute_window():
    run = Runner(detector("success_after_failures"))
    for i in range(5):
        run(fail(i))
    assert run(view(601)) == []  # the first failure is now older than 10 minutes


def test_a_late_failure_completes_the_run_before_a_success():
    run = Runner(detector("success_after_failures"))
    for i in range(4):
        run(fail(i))
    run(view(100))
    [alert] = run(fail(50))  # arrives after the success, happened before it
    assert alert.last_seen_us - alert.first_seen_us == 100 * US
