import struct

import pytest

from pipeline.codec import Decoder, Encoding, encode
from pipeline.errors import DecodeError
from pipeline.schemas import ACCESS_EVENT, ENRICHED_EVENT, SchemaStore, default_store
from pipeline.stages.validate import validate
from tests.factories import make_event


@pytest.fixture
def store() -> SchemaStore:
    return default_store()


@pytest.fixture
def decoder(store: SchemaStore) -> Decoder:
    return Decoder(store, store.latest(ACCESS_EVENT))


@pytest.mark.parametrize("encoding", list(Encoding))
def test_round_trip_in_each_encoding(store, decoder, encoding):
    event = make_event()
    value = encode(event, store.latest(ACCESS_EVENT), encoding)
    decoded = decoder.decode(value)
    assert decoded.record == event
    assert decoded.encoding is encoding


def test_single_object_frame_follows_the_avro_specification(store):
    entry = store.latest(ACCESS_EVENT)
    value = encode(make_event(), entry, Encoding.SINGLE_OBJECT)
    assert value[:2] == b"\xc3\x01"
    # The fingerprint is CRC-64-AVRO of the canonical form, little-endian.
    from fastavro.schema import fingerprint

    assert value[2:10].hex() == fingerprint(entry.canonical, "CRC-64-AVRO")


def test_confluent_frame_carries_the_registry_id(store):
    entry = store.latest(ACCESS_EVENT)
    value = encode(make_event(), entry, Encoding.CONFLUENT)
    assert value[0] == 0
    assert struct.unpack(">I", value[1:5])[0] == entry.id == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "undecodable"),
        (b"\x7fnot avro at all", "undecodable"),
        (b"\xc3\x01\x00\x00\x00\x00\x00\x00\x00\x00body", "unknown_schema"),
        (b"\x00\x00\x00\x03\xe7body", "unknown_schema"),
        (b"\xc3\x01\x01", "undecodable"),
    ],
)
def test_bad_bytes_raise_decode_errors_with_reasons(decoder, value, reason):
    with pytest.raises(DecodeError) as info:
        decoder.decode(value)
    assert info.value.reason == reason


def test_truncated_body_is_undecodable(store, decoder):
    value = encode(make_event(), store.latest(ACCESS_EVENT), Encoding.SINGLE_OBJECT)
    with pytest.raises(DecodeError) as info:
        decoder.decode(value[:-7])
    assert info.value.reason == "undecodable"


def test_trailing_garbage_is_undecodable(store, decoder):
    value = encode(make_event(), store.latest(ACCESS_EVENT), Encoding.SINGLE_OBJECT)
    with pytest.raises(DecodeError, match="trailing bytes"):
        decoder.decode(value + b"xx")


def test_another_known_schema_is_not_an_access_event(store, decoder):
    entry = store.latest(ENRICHED_EVENT)
    value = b"\x00" + struct.pack(">I", entry.id) + b"\x00"
    with pytest.raises(DecodeError) as info:
        decoder.decode(value)
    assert info.value.reason == "unknown_schema"


def test_with_a_registry_ids_resolve_through_it(store):
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    from pipeline.codec import RegistryLookup

    client = SchemaRegistryClient.new_client({"url": "mock://codec-test"})
    entry = store.latest(ACCESS_EVENT)
    schema_id = client.register_schema("access-events-value", Schema(entry.text, "AVRO"))
    decoder = Decoder(store, entry, RegistryLookup("mock://codec-test", client=client))
    event = make_event()
    body = encode(event, entry, Encoding.CONFLUENT)[5:]
    value = b"\x00" + struct.pack(">I", schema_id) + body
    assert decoder.decode(value).record == event
    # A producer that registered the canonical form (no logical types) is read too;
    # validation turns its plain microseconds back into a time.
    plain_id = client.register_schema("other-value", Schema(entry.canonical, "AVRO"))
    plain = decoder.decode(b"\x00" + struct.pack(">I", plain_id) + body).record
    assert validate(plain, record_timestamp_ms=4102444800000, max_future_skew_s=0).event == event
    with pytest.raises(DecodeError) as info:
        decoder.decode(b"\x00" + struct.pack(">I", 4242) + body)
    assert info.value.reason == "unknown_schema"


def test_an_unreachable_registry_is_a_transport_error_not_a_bad_record(store):
    from pipeline.codec import RegistryLookup
    from pipeline.errors import TransportError

    lookup = RegistryLookup("http://127.0.0.1:1", retry_s=0.5)
    decoder = Decoder(store, store.latest(ACCESS_EVENT), lookup)
    value = encode(make_event(), store.latest(ACCESS_EVENT), Encoding.CONFLUENT)
    with pytest.raises(TransportError, match="did not answer"):
        decoder.decode(value)
