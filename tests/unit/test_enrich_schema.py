"""EnrichedEvent v2 is a compatible evolution of v1: each reads the other's records."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from pipeline.codec import Decoder, Encoding, encode
from pipeline.schemas import ENRICHED_EVENT, SchemaStore
from tests.factories import make_event

V2_FIELDS = ("network_type", "geo", "as_info", "directory", "user_agent", "classification")


def _versions() -> tuple[Any, Any]:
    store = SchemaStore.load()
    by_version = {e.version: e for e in store.entries if e.name == ENRICHED_EVENT}
    return by_version[1], by_version[2]


def _v1_record() -> dict[str, Any]:
    return {
        "event": make_event(),
        "content_hash": "cd" * 32,
        "received_at": datetime(2026, 1, 1, tzinfo=UTC),
        "source_topic": "access-events",
        "source_partition": 2,
        "source_offset": 99,
        "encoding": "single_object",
        "writer_schema": "access-events-value v1 (id 1)",
        "enrichment_errors": ["geoip: no database"],
    }


CONTEXT: dict[str, Any] = {
    "network_type": "public",
    "geo": {"country_iso_code": "SE", "location": {"lat": 58.4, "lon": 15.6}},
    "as_info": {"number": 29518, "organization": "Bredband2 AB"},
    "directory": {"display_name": "Ada", "privileged": True, "employment_status": "active"},
    "user_agent": {"name": "Firefox", "version": "131.0", "is_bot": False},
    "classification": {"sensitivity": "restricted", "data_categories": ["PCI"], "rule": "cards"},
}


def test_registry_has_v2_as_the_latest_enriched_event() -> None:
    store = SchemaStore.load()
    latest = store.latest(ENRICHED_EVENT)
    assert (latest.id, latest.subject, latest.version) == (5, "access-events-enriched-value", 2)
    v1, v2 = _versions()
    assert v1.fingerprint != v2.fingerprint


def test_v2_reader_reads_v1_records_with_null_context() -> None:
    v1, v2 = _versions()
    written = _v1_record()
    buf = io.BytesIO()
    schemaless_writer(buf, v1.parsed, written)
    buf.seek(0)
    record = schemaless_reader(buf, v1.parsed, v2.parsed)
    assert all(record[f] is None for f in V2_FIELDS)
    assert record["enrichment_errors"] == ["geoip: no database"]
    assert record["event"] == written["event"]


def test_v1_reader_reads_v2_records() -> None:
    store = SchemaStore.load()
    v1, v2 = _versions()
    value = encode({**_v1_record(), **CONTEXT}, v2, Encoding.SINGLE_OBJECT)
    decoded = Decoder(store, v1).decode(value)
    assert decoded.writer.version == 2
    assert not set(V2_FIELDS) & set(decoded.record)
    assert decoded.record["source_offset"] == 99


def test_v2_record_round_trips_with_partial_context() -> None:
    store = SchemaStore.load()
    _, v2 = _versions()
    decoded = Decoder(store, v2).decode(encode({**_v1_record(), **CONTEXT}, v2, Encoding.CONFLUENT))
    assert decoded.record["geo"]["location"] == {"lat": 58.4, "lon": 15.6}
    assert decoded.record["geo"]["city_name"] is None  # defaults fill what an enricher left out
    assert decoded.record["user_agent"]["os_name"] is None
    assert decoded.record["directory"]["privileged"] is True
