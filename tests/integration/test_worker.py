"""The Faust worker against the real Kafka broker of the local stack."""

from __future__ import annotations

import random
import struct
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.codec import Decoder, Encoding, encode
from pipeline.producer import AuditProducer
from pipeline.schemas import ACCESS_EVENT, DEAD_LETTER, ENRICHED_EVENT, default_store
from pipeline.settings import Settings
from tests.factories import make_event
from tests.integration.processes import PipelineProcess, read_topic

STORE = default_store()


def _decode(messages, name):
    decoder = Decoder(STORE, STORE.latest(name))
    return [decoder.decode(m.value()).record for m in messages]


def _worker(settings: Settings, tmp_path, name="worker") -> PipelineProcess:
    return PipelineProcess(settings, "worker", log_dir=tmp_path, name=name)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_events_compressed_with_each_codec_arrive(pipeline_settings, tmp_path, codec):
    settings = pipeline_settings
    events = [make_event() for _ in range(50)]
    with AuditProducer(settings, compression=codec) as producer:
        for event in events:
            producer.send(event)
    worker = _worker(settings, tmp_path).start()
    try:
        out = read_topic(settings, settings.topics.enriched, expected=len(events), timeout=90)
        assert worker.running(), worker.log_tail()
    finally:
        worker.stop()
    ids = [r["event"]["event_id"] for r in _decode(out, ENRICHED_EVENT)]
    assert sorted(ids) == sorted(e["event_id"] for e in events), worker.log_tail()


def _malformed(seed: int) -> list[tuple[bytes, str]]:
    """100 bad messages of every kind, with the reason each must get."""
    rng = random.Random(seed)
    entry = STORE.latest(ACCESS_EVENT)
    bad: list[tuple[bytes, str]] = []
    for _ in range(20):  # random bytes, not starting with either framing's magic byte
        first = rng.choice([b for b in range(256) if b not in (0x00, 0xC3)])
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
        bad.append((bytes([first]) + body, "undecodable"))
    for _ in range(20):  # truncated Avro
        value = encode(make_event(), entry, Encoding.SINGLE_OBJECT)
        bad.append((value[: rng.randint(10, len(value) - 1)], "undecodable"))
    for _ in range(15):  # unknown fingerprint
        bad.append((b"\xc3\x01" + rng.randbytes(8) + b"\x02", "unknown_schema"))
    for _ in range(15):  # unknown schema id
        bad.append(
            (b"\x00" + struct.pack(">I", 9000 + rng.randint(0, 999)) + b"\x02", "unknown_schema")
        )
    for _ in range(15):  # missing required field
        event = make_event(actor={"id": "", "type": "user", "name": None, "tenant": None})
        bad.append((encode(event, entry, Encoding.SINGLE_OBJECT), "missing_field"))
    for i in range(15):  # impossible values
        event = make_event(
            **[
                {"source": {"ip": "300.1.2.3", "port": 1, "user_agent": None}},
                {"event_id": "not-a-uuid"},
                {"occurred_at": datetime(1970, 1, 2, tzinfo=UTC)},
            ][i % 3]
        )
        bad.append((encode(event, entry, Encoding.CONFLUENT), "invalid_field"))
    future = make_event(occurred_at=datetime.now(tz=UTC) + timedelta(hours=2))
    bad[-1] = (encode(future, entry, Encoding.SINGLE_OBJECT), "future_timestamp")
    return bad


def test_malformed_messages_become_dead_letters_and_valid_traffic_still_arrives(
    pipeline_settings, tmp_path
):
    settings = pipeline_settings
    bad = _malformed(seed=5)
    valid = [make_event() for _ in range(200)]
    worker = _worker(settings, tmp_path).start()
    try:
        with AuditProducer(settings) as producer:
            for value, _ in bad:
                producer.produce_raw(value, key=b"bad-producer", headers=[("origin", b"test")])
            for event in valid:
                producer.send(event)
        letters = read_topic(settings, settings.topics.dead_letter, expected=len(bad), timeout=90)
        enriched = read_topic(settings, settings.topics.enriched, expected=len(valid), timeout=90)
        assert worker.running(), worker.log_tail()
    finally:
        worker.stop()
    records = _decode(letters, DEAD_LETTER)
    assert len(records) == 100
    assert Counter(r["reason"] for r in records) == Counter(reason for _, reason in bad)
    assert sorted(r["original_value"] for r in records) == sorted(v for v, _ in bad)
    assert all(r["original_key"] == b"bad-producer" for r in records)
    assert all(r["original_headers"] == [{"key": "origin", "value": b"test"}] for r in records)
    assert all(r["source_topic"] == settings.topics.input for r in records)
    ids = sorted(r["event"]["event_id"] for r in _decode(enriched, ENRICHED_EVENT))
    assert ids == sorted(e["event_id"] for e in valid)


def test_a_processing_error_exits_at_once_and_a_restart_delivers_that_event_and_the_rest(
    pipeline_settings, tmp_path
):
    """A schema registry that cannot be reached is a fault of ours, never a bad record:
    the worker exits non-zero without committing past the event, and once the
    configuration is fixed, that event and all after it arrive."""
    settings = pipeline_settings
    before = [make_event() for _ in range(30)]
    poison = make_event()
    after = [make_event() for _ in range(30)]
    key = before[0]["actor"]["id"].encode()  # same key: all on one partition, in order
    entry = STORE.latest(ACCESS_EVENT)
    with AuditProducer(settings) as producer:
        for event in before:
            producer.produce_raw(encode(event, entry, Encoding.SINGLE_OBJECT), key=key)
        producer.produce_raw(encode(poison, entry, Encoding.CONFLUENT), key=key)
        for event in after:
            producer.produce_raw(encode(event, entry, Encoding.SINGLE_OBJECT), key=key)

    broken = _worker(settings, tmp_path, "worker-broken").start(
        AUDITSTREAM_CODEC__SCHEMA_REGISTRY_URL="http://127.0.0.1:1",
        AUDITSTREAM_CODEC__REGISTRY_RETRY_S="1",
    )
    status = broken.wait(timeout=120)
    assert status != 0, broken.log_tail()
    assert "did not answer" in broken.log_tail(200)
    first = _decode(read_topic(settings, settings.topics.enriched, 30, timeout=30), ENRICHED_EVENT)
    assert {r["event"]["event_id"] for r in first} <= {e["event_id"] for e in before}

    fixed = _worker(settings, tmp_path, "worker-fixed").start()
    try:
        out = read_topic(settings, settings.topics.enriched, expected=61, timeout=90)
    finally:
        fixed.stop()
    seen = {r["event"]["event_id"] for r in _decode(out, ENRICHED_EVENT)}
    assert poison["event_id"] in seen, fixed.log_tail()
    assert {e["event_id"] for e in after} <= seen


def test_events_of_an_aborted_transaction_never_reach_the_enriched_topic(
    pipeline_settings, tmp_path
):
    from confluent_kafka import Producer

    settings = pipeline_settings
    entry = STORE.latest(ACCESS_EVENT)
    producer = Producer(
        {**settings.kafka.client_config(), "transactional.id": f"tx-{settings.topics.input}"}
    )
    producer.init_transactions(30)
    aborted = [make_event() for _ in range(20)]
    committed = [make_event() for _ in range(20)]
    for events, commit in ((aborted, False), (committed, True)):
        producer.begin_transaction()
        for event in events:
            producer.produce(
                settings.topics.input, encode(event, entry, Encoding.SINGLE_OBJECT), key=b"k"
            )
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    worker = _worker(settings, tmp_path).start()
    try:
        out = read_topic(settings, settings.topics.enriched, expected=len(committed), timeout=90)
        # Give aborted records, which come first in the log, every chance to show up.
        out += read_topic(settings, settings.topics.enriched, expected=10**9, timeout=3)[len(out) :]
    finally:
        worker.stop()
    ids = {r["event"]["event_id"] for r in _decode(out, ENRICHED_EVENT)}
    assert ids == {e["event_id"] for e in committed}, worker.log_tail()


def test_an_offset_out_of_range_stops_the_worker_instead_of_skipping(pipeline_settings, tmp_path):
    """Retention removed records the worker never read: it must not quietly jump ahead."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    settings = pipeline_settings
    key = b"u-out-of-range"
    with AuditProducer(settings) as producer:
        for _ in range(10):
            producer.produce_raw(
                encode(make_event(), STORE.latest(ACCESS_EVENT), Encoding.SINGLE_OBJECT), key=key
            )
    first = read_topic(settings, settings.topics.input, expected=10, timeout=30)
    partition = first[0].partition()
    admin = AdminClient(settings.kafka.client_config())
    tp = TopicPartition(settings.topics.input, partition, 5)
    for future in admin.delete_records([tp]).values():
        future.result(30)  # the group's committed offset (0) is now below the log start (5)
    worker = _worker(settings, tmp_path).start()
    status = worker.wait(timeout=120)
    assert status != 0, worker.log_tail()
    assert "OffsetOutOfRange" in worker.log_tail(200) or "out of range" in worker.log_tail(200)
    assert read_topic(settings, settings.topics.enriched, expected=1, timeout=3) == []


def test_produce_command_sends_json_lines_and_names_each_bad_line(pipeline_settings, tmp_path):
    import json

    from pipeline.events import event_to_json

    settings = pipeline_settings
    good = [make_event() for _ in range(3)]
    lines = [json.dumps(event_to_json(e)) for e in good]
    lines.insert(1, "{not json")
    lines.append(json.dumps({**event_to_json(make_event()), "event_id": "nope"}))
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    command = PipelineProcess(settings, "produce", str(path), log_dir=tmp_path, name="produce")
    assert command.start().wait(timeout=60) == 1
    log = command.log_tail()
    assert "line 2: not JSON" in log
    assert "line 5: invalid_field" in log
    assert "sent 3 events, 2 bad lines" in log
    sent = read_topic(settings, settings.topics.input, expected=3, timeout=30)
    decoder = Decoder(STORE, STORE.latest(ACCESS_EVENT))
    ids = {decoder.decode(m.value()).record["event_id"] for m in sent}
    assert ids == {e["event_id"] for e in good}
