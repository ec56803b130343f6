from tests.detect_factories import CHANGCHUN, LONDON, Runner, detector, view

DAY = 86400.0


def test_impossible_travel_london_to_changchun_in_an_hour():
    run = Runner(detector("impossible_travel"))
    assert run(view(0, **LONDON)) == []
    [alert] = run(view(3600, source_ip="175.16.199.7", **CHANGCHUN))
    assert alert.attributes["from_country"] == "GB" and alert.attributes["to_country"] == "CN"
    assert int(alert.attributes["distance_km"]) > 7000
    assert alert.mitre_techniques == ("T1078",)
    assert "km/h" in alert.summary


def test_the_same_trip_over_a_day_is_possible():
    run = Runner(detector("impossible_travel"))
    run(view(0, **LONDON))
    assert run(view(DAY, source_ip="175.16.199.7", **CHANGCHUN)) == []


def test_pairs_under_fifty_kilometres_are_ignored_even_at_once():
    run = Runner(detector("impossible_travel"))
    run(view(0, **LONDON))
    # Boxford is about 90 km away; a point 30 km away is not
    assert run(view(1, lat=51.75, lon=-0.5, country="GB")) == []
    assert run(view(2, lat=51.75, lon=-1.25, country="GB"))


def test_private_addresses_and_missing_geo_are_never_a_baseline():
    run = Runner(detector("impossible_travel"))
    run(view(0, network_type="private", source_ip="10.20.1.1", **CHANGCHUN))
    run(view(1, country=None, lat=None, lon=None, asn=None))
    assert run.states.get("u1") is None
    assert run(view(60, **LONDON)) == []


def test_a_late_login_is_compared_with_its_neighbours_in_time():
    run = Runner(detector("impossible_travel"))
    run(view(0, **LONDON))
    run(view(DAY, **LONDON))
    [alert] = run(view(DAY - 1800, source_ip="175.16.199.7", **CHANGCHUN))
    assert alert.attributes["to_country"] == "GB"  # Changchun then London half an hour later


def test_new_country_is_silent_while_learning_then_fires():
    run = Runner(detector("new_country_or_asn"))
    run(view(0, **LONDON))
    assert run(view(DAY, source_ip="175.16.199.7", **CHANGCHUN)) == []  # still learning
    run(view(14 * DAY, **LONDON))
    assert run(view(14 * DAY + 60, source_ip="175.16.199.7", **CHANGCHUN)) == []  # seen 13 d ago
    assert run(view(40 * DAY, **LONDON)) == []  # back after 26 days: nothing recent to compare
    [alert] = run(view(40 * DAY + 60, source_ip="175.16.199.8", **CHANGCHUN))
    assert alert.attributes["new_country"] == "CN" and alert.attributes["new_asn"] == "4837"


def test_new_asn_in_a_known_country():
    run = Runner(detector("new_country_or_asn"))
    run(view(0, **LONDON))
    run(view(15 * DAY, **LONDON))
    [alert] = run(view(15 * DAY + 5, **{**LONDON, "asn": 5607, "as_org": "Sky UK"}))
    assert "new_country" not in alert.attributes and alert.attributes["new_asn"] == "5607"


def test_new_country_ignores_private_addresses_and_failures():
    run = Runner(detector("new_country_or_asn"))
    run(view(0, **LONDON))
    assert run(view(20 * DAY, network_type="private", **CHANGCHUN)) == []
    assert run(view(20 * DAY, outcome="failure", **CHANGCHUN)) == []
