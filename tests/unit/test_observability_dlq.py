"""Dead letters shown to an operator, and which ones redrive would send, without Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.codec import Encoding, encode
from pipeline.errors import ConfigError
from pipeline.observability.dlq import (
    DeadLetter,
    describe_original,
    parse_position,
    show_lines,
    still_fails,
)
from pipeline.schemas import ACCESS_EVENT, default_store
from pipeline.settings import Settings
from tests.factories import make_event

STORE = default_store()
SETTINGS = Settings()


def _letter(value: bytes | None, reason: str = "undecodable", **extra) -> DeadLetter:
    letter = {
        "reason": reason,
        "detail": "something was wrong",
        "event_id": None,
        "source_topic": "access-events",
        "source_partition": 3,
        "source_offset": 1742,
        "source_timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "original_key": b"u00042",
        "original_value": value,
        "original_headers": [{"key": "trace", "value": b"abc"}],
        "dead_lettered_at": datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
        **extra,
    }
    return DeadLetter(partition=1, offset=7, letter=letter)


def test_positions_are_partition_colon_offset():
    assert parse_position("3:1742") == (3, 1742)
    for bad in ("3", "3:", ":4", "a:1", "3:-1"):
        with pytest.raises(ConfigError, match="PARTITION:OFFSET"):
            parse_position(bad)


def test_original_bytes_that_decode_are_shown_as_the_event():
    event = make_event(action="Login")  # decodes, but invalid: the action is not lower-case
    value = encode(event, STORE.latest(ACCESS_EVENT), Encoding.SINGLE_OBJECT)
    lines = describe_original(value, SETTINGS, STORE)
    assert "an access event (single_object" in lines[0]
    text = "\n".join(lines)
    assert f'"event_id": "{event["event_id"]}"' in text
    assert '"action": "Login"' in text


def test_original_text_is_shown_as_text_and_binary_as_a_hex_dump():
    text = describe_original(b'{"event_id": "x"}', SETTINGS, STORE)
    assert "does not decode as an access event" in text[0]
    assert text[1:] == ["as UTF-8 text:", '{"event_id": "x"}']
    binary = describe_original(bytes(range(40)), SETTINGS, STORE)
    assert binary[1] == "hex dump:"
    assert binary[2].startswith("  00000000  00 01 02 03")
    assert len(binary) == 2 + 3
    assert describe_original(None, SETTINGS, STORE) == ["original value: (none: a null value)"]


def test_show_names_reason_source_times_key_and_headers():
    lines = show_lines(_letter(b"\x01\x02"), SETTINGS, STORE)
    text = "\n".join(lines)
    assert "dead letter access-events-dlq 1:7" in text
    assert "reason:            undecodable" in text
    assert "source:            access-events/3@1742" in text
    assert "received at:       2026-01-02T03:04:05.000Z" in text
    assert "original key:      'u00042'" in text
    assert "  trace: 'abc'" in text


def test_redrive_sends_only_what_now_passes_unless_forced():
    entry = STORE.latest(ACCESS_EVENT)
    fixed = _letter(encode(make_event(), entry, Encoding.SINGLE_OBJECT), reason="unknown_schema")
    assert still_fails(fixed, SETTINGS, STORE) is None
    garbage = _letter(b"\x07garbage")
    assert still_fails(garbage, SETTINGS, STORE).startswith("undecodable")
    # dead-lettered as from the future then; now its time has come
    later = make_event(occurred_at=datetime.now(tz=UTC) - timedelta(minutes=1))
    came = _letter(encode(later, entry, Encoding.SINGLE_OBJECT), reason="future_timestamp")
    assert still_fails(came, SETTINGS, STORE) is None
    invalid = _letter(encode(make_event(event_id="nope"), entry, Encoding.SINGLE_OBJECT))
    assert still_fails(invalid, SETTINGS, STORE).startswith("invalid_field")
