import io
from datetime import UTC, datetime

from fastavro import schemaless_reader

from pipeline.codec import Encoding, encode
from pipeline.schemas import ACCESS_EVENT, DEAD_LETTER, ENRICHED_EVENT, default_store
from pipeline.settings import Settings
from pipeline.worker.processor import InputRecord, Processor
from tests.factories import make_event


def _read(value: bytes, name: str) -> dict:
    entry = default_store().latest(name)
    assert value[2:10] == entry.fingerprint
    return schemaless_reader(io.BytesIO(value[10:]), entry.parsed, entry.parsed)


def _record(value: bytes, offset: int = 7) -> InputRecord:
    return InputRecord(
        topic="access-events",
        partition=3,
        offset=offset,
        timestamp_ms=int(datetime.now(tz=UTC).timestamp() * 1000),
        key=b"u00042",
        value=value,
        headers=[("trace", b"abc")],
    )


def test_valid_event_becomes_one_enriched_event_with_its_source_position():
    processor = Processor(Settings(), default_store())
    event = make_event()
    value = encode(event, default_store().latest(ACCESS_EVENT), Encoding.CONFLUENT)
    [out] = processor.process(_record(value))
    assert out.topic == "access-events-enriched"
    assert out.key == b"u00042"
    enriched = _read(out.value, ENRICHED_EVENT)
    assert enriched["event"] == event
    assert (enriched["source_partition"], enriched["source_offset"]) == (3, 7)
    assert enriched["encoding"] == "confluent"


def test_garbage_becomes_a_dead_letter_with_original_bytes_headers_and_reason():
    processor = Processor(Settings(), default_store())
    [out] = processor.process(_record(b"\xde\xad\xbe\xef", offset=11))
    assert out.topic == "access-events-dlq"
    assert ("auditstream.reason", b"undecodable") in out.headers
    letter = _read(out.value, DEAD_LETTER)
    assert letter["reason"] == "undecodable"
    assert letter["original_value"] == b"\xde\xad\xbe\xef"
    assert letter["original_key"] == b"u00042"
    assert letter["original_headers"] == [{"key": "trace", "value": b"abc"}]
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "access-events",
        3,
        11,
    )


def test_invalid_event_dead_letter_keeps_its_event_id():
    processor = Processor(Settings(), default_store())
    event = make_event(action="NOT A VERB")
    value = encode(event, default_store().latest(ACCESS_EVENT), Encoding.SINGLE_OBJECT)
    [out] = processor.process(_record(value))
    letter = _read(out.value, DEAD_LETTER)
    assert letter["reason"] == "invalid_field"
    assert letter["event_id"] == event["event_id"]


def test_with_state_a_copy_is_dropped_and_a_changed_copy_is_a_conflicting_duplicate():
    from pipeline.settings import DetectSettings
    from pipeline.stages.dedupe import DictStore
    from pipeline.worker.processor import PartitionState

    processor = Processor(Settings(detect=DetectSettings(enabled=False)), default_store())
    state = PartitionState(DictStore(), "cl")
    entry = default_store().latest(ACCESS_EVENT)
    event = make_event()
    value = encode(event, entry, Encoding.SINGLE_OBJECT)
    first = processor.process(_record(value, offset=1), state)
    assert [o.topic for o in first] == ["access-events-enriched", "cl"]
    assert first[1].changelog and first[1].key == event["event_id"].encode()
    # The same message again (a crash replay) is processed again, changelog included.
    assert [o.topic for o in processor.process(_record(value, offset=1), state)] == [
        "access-events-enriched",
        "cl",
    ]
    assert processor.process(_record(value, offset=2), state) == []
    changed = encode({**event, "action": "delete"}, entry, Encoding.SINGLE_OBJECT)
    [letter] = processor.process(_record(changed, offset=3), state)
    record = _read(letter.value, DEAD_LETTER)
    assert record["reason"] == "conflicting_duplicate"
    assert record["original_value"] == changed
    assert "@1" in record["detail"]


def test_eight_failed_logins_raise_one_brute_force_alert_and_a_replay_re_emits_it():
    from datetime import timedelta

    from pipeline.schemas import ALERT
    from pipeline.stages.dedupe import DictStore
    from pipeline.worker.processor import PartitionState

    processor = Processor(Settings(), default_store())
    state = PartitionState(DictStore(), "cl-dedupe", DictStore(), "cl-users")
    entry = default_store().latest(ACCESS_EVENT)
    start = datetime.now(tz=UTC) - timedelta(minutes=5)
    alerts = []
    by_ip = []
    values = []
    for n in range(8):
        event = make_event(
            action="login",
            outcome="failure",
            reason="invalid_password",
            occurred_at=start + timedelta(seconds=10 * n),
        )
        values.append(encode(event, entry, Encoding.SINGLE_OBJECT))
        outputs = processor.process(_record(values[-1], offset=100 + n), state)
        alerts += [o for o in outputs if o.topic == "access-alerts"]
        by_ip += [o for o in outputs if o.topic == "access-events-by-ip"]
    assert len(by_ip) == 8 and by_ip[0].key == b"81.2.69.160" and by_ip[0].by_key
    records = [_read(o.value, ALERT) for o in alerts]
    assert [(r["detector"], r["revision"]) for r in records] == [("brute_force_user", 1)]
    # A crash replay of the event that opened it re-emits the same alert, not a new one.
    again = processor.process(_record(values[-1], offset=107), state)
    [replayed] = [_read(o.value, ALERT) for o in again if o.topic == "access-alerts"]
    assert (replayed["alert_id"], replayed["revision"]) == (records[0]["alert_id"], 1)


def test_detection_tables_are_swept_on_event_time_with_tombstones(tmp_path):
    from datetime import timedelta

    from pipeline.settings import DetectSettings
    from pipeline.stages.dedupe import DictStore
    from pipeline.worker.processor import PartitionState

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "alerts: {retention_days: 1}\ndetectors: {dormant_account: {enabled: false}}\n"
    )
    settings = Settings(detect=DetectSettings(rules_path=rules, sweep_every=2))
    processor = Processor(settings, default_store())
    state = PartitionState(DictStore(), "cl-dedupe", DictStore(), "cl-users")
    entry = default_store().latest(ACCESS_EVENT)
    now = datetime.now(tz=UTC)
    old = make_event(
        actor={"id": "u-old", "type": "user", "name": "old", "tenant": "acme"},
        occurred_at=now - timedelta(days=3),
    )
    first = processor.process(_record(encode(old, entry, Encoding.SINGLE_OBJECT), 1), state)
    assert not [o for o in first if o.topic == "cl-users" and o.value is None]
    assert b"u-old" in state.users.data
    recent = processor.process(
        _record(encode(make_event(), entry, Encoding.SINGLE_OBJECT), 2), state
    )
    tombstones = [o.key for o in recent if o.changelog and o.value is None]
    assert tombstones == [b"u-old"]
    assert set(state.users.data) == {b"u00042"}


def test_after_a_rebalance_detection_reads_the_table_again():
    from datetime import timedelta

    from pipeline.schemas import ALERT
    from pipeline.stages.dedupe import DictStore
    from pipeline.worker.processor import PartitionState

    processor = Processor(Settings(), default_store())
    state = PartitionState(DictStore(), "cl-dedupe", DictStore(), "cl-users")
    entry = default_store().latest(ACCESS_EVENT)
    start = datetime.now(tz=UTC) - timedelta(minutes=5)

    def failure(n: int) -> bytes:
        event = make_event(
            action="login",
            outcome="failure",
            reason="invalid_password",
            occurred_at=start + timedelta(seconds=n),
        )
        return encode(event, entry, Encoding.SINGLE_OBJECT)

    for n in range(7):
        processor.process(_record(failure(n), offset=n + 1), state)
    # The partition moved away and back: recovery left a table without those failures.
    state.users.data.clear()
    processor.rebalanced()
    outputs = processor.process(_record(failure(7), offset=8), state)
    assert not [o for o in outputs if o.topic == "access-alerts"]
    for n in range(8, 15):
        outputs = processor.process(_record(failure(n), offset=n + 1), state)
    [alert] = [_read(o.value, ALERT) for o in outputs if o.topic == "access-alerts"]
    assert alert["detector"] == "brute_force_user" and alert["opened_by_offset"] == 15
