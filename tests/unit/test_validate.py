from datetime import UTC, datetime, timedelta

import pytest

from pipeline.errors import ValidationError
from pipeline.stages.validate import content_hash, validate
from tests.factories import make_event


def _now_ms() -> int:
    return int(datetime.now(tz=UTC).timestamp() * 1000)


def check(event, skew=300.0, ts=None):
    return validate(event, record_timestamp_ms=ts or _now_ms(), max_future_skew_s=skew)


def test_a_complete_event_is_valid_and_hashed():
    event = make_event()
    valid = check(event)
    assert valid.content_hash == content_hash(dict(event))
    assert len(valid.content_hash) == 64


def test_equal_content_hashes_equal_and_any_change_differs():
    event = make_event()
    same = dict(event)
    changed = make_event(event_id=event["event_id"], action="delete")
    assert content_hash(event) == content_hash(same)
    assert content_hash(event) != content_hash(changed)


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"event_id": ""}, "missing_field"),
        ({"event_id": "not-a-uuid"}, "invalid_field"),
        ({"actor": {"id": " ", "type": "user", "name": None, "tenant": None}}, "missing_field"),
        ({"service": {"name": "", "host": None, "environment": None}}, "missing_field"),
        ({"action": ""}, "missing_field"),
        ({"action": "DROP TABLE"}, "invalid_field"),
        ({"occurred_at": datetime(1999, 12, 31, tzinfo=UTC)}, "invalid_field"),
        ({"source": {"ip": "999.1.1.1", "port": None, "user_agent": None}}, "invalid_field"),
        ({"source": {"ip": None, "port": 70000, "user_agent": None}}, "invalid_field"),
        ({"resource": {"type": "bucket", "id": "", "name": None}}, "missing_field"),
        ({"attributes": {f"k{i}": "v" for i in range(65)}}, "invalid_field"),
    ],
)
def test_impossible_or_missing_values_are_rejected_with_a_reason(override, reason):
    with pytest.raises(ValidationError) as info:
        check(make_event(**override))
    assert info.value.reason == reason


def test_event_too_far_ahead_of_its_record_timestamp_is_future_timestamp():
    ts = _now_ms()
    ahead = datetime.fromtimestamp(ts / 1000, tz=UTC) + timedelta(minutes=6)
    with pytest.raises(ValidationError) as info:
        check(make_event(occurred_at=ahead), ts=ts)
    assert info.value.reason == "future_timestamp"


def test_small_clock_skew_is_tolerated():
    ts = _now_ms()
    ahead = datetime.fromtimestamp(ts / 1000, tz=UTC) + timedelta(minutes=4)
    assert check(make_event(occurred_at=ahead), ts=ts).occurred_at == ahead


def test_ipv6_source_is_valid():
    event = make_event(source={"ip": "2001:db8::1", "port": 443, "user_agent": None})
    assert check(event)
