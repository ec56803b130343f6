"""``auditstream dlq list|show|redrive`` against the real broker."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from confluent_kafka import Producer

from pipeline.cli import build_parser
from pipeline.codec import Encoding, encode
from pipeline.observability.dlq import REDRIVEN_FROM
from pipeline.schemas import ACCESS_EVENT, DEAD_LETTER, default_store
from pipeline.settings import Settings
from tests.factories import make_event
from tests.integration.processes import read_topic

STORE = default_store()


def _dead_letter(reason: str, value: bytes, at: datetime, offset: int) -> bytes:
    letter = {
        "reason": reason,
        "detail": f"bad in the way of {reason}",
        "event_id": None,
        "source_topic": "access-events",
        "source_partition": 0,
        "source_offset": offset,
        "source_timestamp": at,
        "original_key": f"k{offset}".encode(),
        "original_value": value,
        "original_headers": [{"key": "trace", "value": b"t1"}],
        "dead_lettered_at": at,
    }
    return encode(letter, STORE.latest(DEAD_LETTER), Encoding.SINGLE_OBJECT)


def _run(settings: Settings, capsys, *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["dlq", *argv])
    status = args.func(args, settings)
    out, err = capsys.readouterr()
    return status, out, err


def test_dead_letters_are_listed_shown_and_redriven_as_new_inputs(pipeline_settings, capsys):
    settings = pipeline_settings
    entry = STORE.latest(ACCESS_EVENT)
    now = datetime.now(tz=UTC)
    good = make_event()
    good_bytes = encode(good, entry, Encoding.SINGLE_OBJECT)
    records = [
        _dead_letter("undecodable", b"\x07not avro", now - timedelta(hours=2), 10),
        _dead_letter("unknown_schema", good_bytes, now - timedelta(minutes=5), 11),
        _dead_letter("undecodable", b"plain text", now - timedelta(minutes=1), 12),
    ]
    producer = Producer(settings.kafka.client_config())
    for value in records:
        producer.produce(settings.topics.dead_letter, value=value, partition=2)
    assert producer.flush(30) == 0

    status, out, err = _run(settings, capsys, "list")
    assert status == 0
    rows = out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["2:0", "2:1", "2:2"]
    assert "3 dead letters" in err and "undecodable 2" in err and "unknown_schema 1" in err

    _, out, _ = _run(settings, capsys, "list", "--reason", "undecodable")
    assert [r.split()[0] for r in out.splitlines()[1:]] == ["2:0", "2:2"]
    since = (now - timedelta(minutes=30)).isoformat()
    _, out, _ = _run(settings, capsys, "list", "--since", since)
    assert [r.split()[0] for r in out.splitlines()[1:]] == ["2:1", "2:2"]

    status, out, _ = _run(settings, capsys, "show", "2:1")
    assert status == 0
    assert "reason:            unknown_schema" in out
    assert f'"event_id": "{good["event_id"]}"' in out
    status, out, _ = _run(settings, capsys, "show", "2:2")
    assert "as UTF-8 text:" in out and "plain text" in out

    # Redrive everything: only the one that now passes is sent, unless forced.
    status, _, err = _run(settings, capsys, "redrive", "--all")
    assert status == 3
    assert "2:0: skipped" in err and "2:2: skipped" in err
    sent = read_topic(settings, settings.topics.input, expected=1, timeout=30)
    assert len(sent) == 1
    message = sent[0]
    assert message.value() == good_bytes
    assert message.key() == b"k11"
    headers = dict(message.headers())
    assert headers["trace"] == b"t1"
    assert headers[REDRIVEN_FROM] == f"{settings.topics.dead_letter}/2@1".encode()

    status, _, err = _run(settings, capsys, "redrive", "2:0", "--force")
    assert status == 0
    time.sleep(0.5)
    inputs = read_topic(settings, settings.topics.input, expected=2, timeout=30)
    assert sorted(m.value() for m in inputs) == sorted([good_bytes, b"\x07not avro"])
    # the dead letters themselves stay
    status, out, _ = _run(settings, capsys, "list")
    assert len(out.splitlines()[1:]) == 3
