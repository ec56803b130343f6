import pytest

from pipeline.errors import DeliveryError, ValidationError
from pipeline.events import event_from_json, event_to_json
from pipeline.producer import AuditProducer
from pipeline.settings import KafkaSettings, Settings
from tests.factories import make_event


def _unreachable() -> Settings:
    # Nothing listens on port 1: deliveries fail once the message timeout passes.
    return Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"))


def test_a_bad_event_raises_to_the_caller_before_sending():
    producer = AuditProducer(_unreachable())
    with pytest.raises(ValidationError, match="event_id"):
        producer.send(make_event(event_id="nope"))


def test_an_event_that_does_not_fit_the_schema_is_a_validation_error():
    producer = AuditProducer(_unreachable())
    with pytest.raises(ValidationError, match="does not fit"):
        producer.send(make_event(outcome="maybe"))


def test_delivery_failure_surfaces_at_flush():
    producer = AuditProducer(_unreachable(), config={"message.timeout.ms": 500})
    producer.send(make_event())
    with pytest.raises(DeliveryError, match="not delivered"):
        producer.flush(timeout=10)


def test_json_round_trip_of_an_event():
    event = make_event()
    assert event_from_json(event_to_json(event)) == event


def test_json_event_gets_optional_defaults():
    minimal = {
        "event_id": "6f1c2a8e-8f6e-4c1e-9b8a-1d2e3f4a5b6c",
        "occurred_at": "2026-11-29T10:00:00Z",
        "actor": {"id": "u1"},
        "action": "read",
        "outcome": "success",
        "source": {},
        "service": {"name": "crm"},
    }
    event = event_from_json(minimal)
    assert event["attributes"] == {}
    assert event["actor"]["type"] == "unknown"
    assert event["occurred_at"].isoformat() == "2026-11-29T10:00:00+00:00"
