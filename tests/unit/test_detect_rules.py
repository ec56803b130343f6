import io
from datetime import UTC, datetime

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from pipeline.errors import ConfigError
from pipeline.schemas import ALERT, SchemaStore
from pipeline.stages.detect.rules import Rules, load_rules, rules_file
from tests.detect_factories import Runner, detector, fail


def test_the_shipped_rules_file_is_the_built_in_defaults():
    assert load_rules(rules_file()) == Rules()
    assert load_rules(None).detectors.brute_force_user.threshold == 8


def test_a_partial_file_changes_only_what_it_names(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("detectors:\n  brute_force_user:\n    threshold: 3\n")
    rules = load_rules(path)
    assert rules.detectors.brute_force_user.threshold == 3
    assert rules.detectors.brute_force_user.window_s == 120
    assert rules.detectors.password_spraying == Rules().detectors.password_spraying


def test_a_bad_rules_file_names_the_key(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("detectors:\n  brute_force_user:\n    threshold: -1\n")
    with pytest.raises(ConfigError, match=r"rules.yaml: detectors.brute_force_user.threshold"):
        load_rules(path)
    path.write_text("detectors:\n  brute_force_usr: {}\n")
    with pytest.raises(ConfigError, match="brute_force_usr"):
        load_rules(path)


def _alert():
    run = Runner(detector("brute_force_user"))
    for i in range(8):
        run(fail(i))
    return run.alerts[-1]


def test_an_alert_is_a_valid_v2_record_that_a_v1_reader_reads():
    store = SchemaStore.load()
    v2 = store.latest(ALERT)
    assert v2.id == 6
    v1 = store.by_id(3)
    assert v1 is not None
    alert = _alert()
    buf = io.BytesIO()
    schemaless_writer(buf, v2.parsed, alert.to_avro())
    buf.seek(0)
    old = schemaless_reader(buf, v2.parsed, v1.parsed)
    assert old["alert_id"] == alert.alert_id and "title" not in old
    assert old["first_seen"] == datetime.fromtimestamp(alert.first_seen_us / 1e6, tz=UTC)


def test_a_v1_alert_reads_with_v2_defaults():
    store = SchemaStore.load()
    v1, v2 = store.by_id(3), store.latest(ALERT)
    record = {
        k: v for k, v in _alert().to_avro().items() if k in {f["name"] for f in v1.parsed["fields"]}
    }
    buf = io.BytesIO()
    schemaless_writer(buf, v1.parsed, record)
    buf.seek(0)
    new = schemaless_reader(buf, v1.parsed, parse_schema(v2.parsed))
    assert new["title"] == "" and new["mitre_techniques"] == [] and new["actor_id"] is None


def test_an_alert_explains_itself():
    alert = _alert()
    assert alert.title == "Brute force against user: u1"
    assert "failed to log in 8 times within 120 seconds" in alert.summary
    assert alert.actor_id == "u1" and alert.source_ip == "81.2.69.160"
    assert alert.window_s == 120 and len(alert.event_ids) == 8
