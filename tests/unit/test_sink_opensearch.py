"""The OpenSearch sink against a fake client: index names, per-item results, retries."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opensearchpy import exceptions as os_exc

from pipeline import telemetry
from pipeline.codec import Encoding, encode
from pipeline.errors import DeliveryError, TransportError
from pipeline.schemas import ALERT, ENRICHED_EVENT, default_store
from pipeline.settings import OpenSearchSettings, RetentionSettings
from pipeline.sinks.base import Batch, Record, SinkError
from pipeline.sinks.opensearch import OpenSearchSink, alerts_index, events_index

NOW = datetime(2025, 3, 2, 0, 0, tzinfo=UTC)
OCCURRED = datetime(2025, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
EVENTS, ALERTS = "enriched", "alerts"


def enriched(event_id: str, content_hash: str = "h1", occurred: datetime = OCCURRED) -> bytes:
    record = {
        "event": {
            "event_id": event_id,
            "schema_version": 1,
            "occurred_at": occurred,
            "actor": {"id": "u-1", "type": "user", "name": "alice", "tenant": None},
            "action": "read",
            "outcome": "success",
            "reason": None,
            "resource": {"type": "document", "id": "d-1", "name": None},
            "source": {"ip": "192.0.2.1", "port": None, "user_agent": None},
            "service": {"name": "docs", "host": None, "environment": "prod"},
            "session_id": None,
            "request_id": None,
            "auth": None,
            "attributes": {},
        },
        "content_hash": content_hash,
        "received_at": occurred + timedelta(seconds=1),
        "source_topic": "access-events",
        "source_partition": 0,
        "source_offset": 7,
        "encoding": "single_object",
        "writer_schema": "access-events-value v1",
        "enrichment_errors": [],
    }
    store = default_store()
    return encode(record, store.latest(ENRICHED_EVENT), Encoding.SINGLE_OBJECT)


def alert(revision: int) -> bytes:
    record = {
        "alert_id": "a-1",
        "revision": revision,
        "detector": "brute_force",
        "severity": "high",
        "entity_type": "user",
        "entity_id": "u-1",
        "summary": "s",
        "first_seen": datetime(2025, 2, 28, 23, 0, tzinfo=UTC),
        "last_seen": OCCURRED,
        "event_count": revision * 3,
        "event_ids": [],
        "opened_by_partition": 0,
        "opened_by_offset": 1,
        "attributes": {},
    }
    return encode(record, default_store().latest(ALERT), Encoding.SINGLE_OBJECT)


def record(offset: int, value: bytes, topic: str = EVENTS) -> Record:
    return Record(topic, 0, offset, 2, 1_740_873_600_000, None, value)


class FakeClient:
    """Answers bulk items from a script: status by _id, stored hashes for mget."""

    def __init__(self, statuses: dict[str, list[int]] | None = None) -> None:
        self.statuses = statuses or {}
        self.stored: dict[str, str] = {}
        self.bulks: list[list[dict[str, Any]]] = []
        self.mgets: list[dict[str, Any]] = []
        self.raise_on_bulk: Exception | None = None

    def bulk(self, body: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        assert params == {"refresh": "false"}
        if self.raise_on_bulk is not None:
            raise self.raise_on_bulk
        self.bulks.append(body)
        items = []
        for action, doc in zip(body[::2], body[1::2], strict=True):
            ((op, meta),) = action.items()
            script = self.statuses.get(meta["_id"])
            status = script.pop(0) if script else 201
            if status == 201:
                self.stored.setdefault(meta["_id"], doc.get("event", {}).get("hash", ""))
            error = {
                409: {"type": "version_conflict_engine_exception"},
                429: {"type": "es_rejected_execution_exception"},
                400: {"type": "strict_dynamic_mapping_exception", "reason": "field [x]"},
            }.get(status)
            items.append({op: {"_id": meta["_id"], "status": status, "error": error}})
        return {"errors": any(i[next(iter(i))]["status"] >= 300 for i in items), "items": items}

    def mget(self, body: dict[str, Any]) -> dict[str, Any]:
        self.mgets.append(body)
        docs = []
        for d in body["docs"]:
            h = self.stored.get(d["_id"])
            docs.append({"found": h is not None, "_source": {"event": {"hash": h}}})
        return {"docs": docs}


def make_sink(client: FakeClient, granularity: str = "day") -> OpenSearchSink:
    return OpenSearchSink(
        client,  # type: ignore[arg-type]
        OpenSearchSettings(index_granularity=granularity),  # type: ignore[arg-type]
        RetentionSettings(events_days=90),
        default_store(),
        events_topic=EVENTS,
        alerts_topic=ALERTS,
        now=lambda: NOW,
    )


def batch(*records: Record) -> Batch:
    return Batch(records=list(records), attempts=1)


def count(result: str) -> float:
    value: float = telemetry.EVENTS.labels(stage="sink_opensearch", result=result)._value.get()
    return value


# -- index names ------------------------------------------------------------------


def test_event_index_by_day_or_month_of_occurred_at_in_utc() -> None:
    late = datetime(2025, 3, 1, 23, 30, tzinfo=UTC)
    assert events_index("audit-events", late, "day") == "audit-events-2025.03.01"
    assert events_index("audit-events", late, "month") == "audit-events-2025.03"
    from zoneinfo import ZoneInfo

    local = datetime(2025, 3, 2, 0, 30, tzinfo=ZoneInfo("Europe/Paris"))  # 23:30 UTC on the 1st
    assert events_index("audit-events", local) == "audit-events-2025.03.01"


def test_alert_index_by_month_of_first_seen() -> None:
    opened = datetime(2025, 1, 31, 23, 0, tzinfo=UTC)
    assert alerts_index("audit-alerts", opened) == "audit-alerts-2025.01"


# -- writing ----------------------------------------------------------------------


def test_events_are_created_once_by_event_id_in_their_day() -> None:
    client = FakeClient()
    sink = make_sink(client)
    ok = count("ok")
    b = batch(record(0, enriched("e-1")), record(1, enriched("e-2")))
    sink.write(b)
    action, doc = client.bulks[0][0], client.bulks[0][1]
    assert action == {"create": {"_index": "audit-events-2025.03.01", "_id": "e-1"}}
    assert doc["event"]["ingested"] == "2025-03-02T00:00:00.000000Z"
    assert doc["event"]["hash"] == "h1"
    assert b.settled == {r.ref for r in b.records}
    assert count("ok") - ok == 2


def test_monthly_indices() -> None:
    client = FakeClient()
    make_sink(client, "month").write(batch(record(0, enriched("e-1"))))
    assert client.bulks[0][0]["create"]["_index"] == "audit-events-2025.03"


def test_a_409_with_the_same_hash_is_a_duplicate() -> None:
    client = FakeClient({"e-1": [409]})
    client.stored["e-1"] = "h1"
    dup = count("duplicate")
    b = batch(record(0, enriched("e-1")))
    make_sink(client).write(b)
    assert len(client.mgets) == 1
    assert count("duplicate") - dup == 1
    assert b.settled == {b.records[0].ref}


def test_a_409_with_another_hash_is_reported_not_overwritten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeClient({"e-1": [409], "e-2": [409]})
    client.stored.update({"e-1": "other", "e-2": "h1"})
    err = count("error")
    b = batch(record(0, enriched("e-1")), record(1, enriched("e-2")))
    with caplog.at_level(logging.ERROR):
        make_sink(client).write(b)
    assert len(client.mgets) == 1 and len(client.mgets[0]["docs"]) == 2  # one mget per batch
    assert count("error") - err == 1
    assert client.stored["e-1"] == "other"
    assert "event_id=e-1" in caplog.text
    assert "stored_hash=other" in caplog.text and "new_hash=h1" in caplog.text
    assert len(client.bulks) == 1  # nothing written over it


def test_refused_items_are_retried_alone() -> None:
    client = FakeClient({"e-2": [429]})
    sink = make_sink(client)
    b = batch(record(0, enriched("e-1")), record(1, enriched("e-2")))
    with pytest.raises(TransportError, match="1 of 2"):
        sink.write(b)
    assert b.settled == {b.records[0].ref}
    b.attempts = 2
    sink.write(b)
    assert [a["create"]["_id"] for a in client.bulks[1][::2]] == ["e-2"]
    assert b.settled == {r.ref for r in b.records}


def test_a_mapping_error_stops_the_sink() -> None:
    client = FakeClient({"e-1": [400]})
    with pytest.raises(DeliveryError, match="strict_dynamic_mapping_exception"):
        make_sink(client).write(batch(record(0, enriched("e-1"))))


def test_connection_problems_are_transport_errors() -> None:
    client = FakeClient()
    client.raise_on_bulk = os_exc.ConnectionTimeout("TIMEOUT", "read timed out", None)
    with pytest.raises(TransportError):
        make_sink(client).write(batch(record(0, enriched("e-1"))))
    client.raise_on_bulk = os_exc.TransportError(503, "unavailable", {})
    with pytest.raises(TransportError):
        make_sink(client).write(batch(record(0, enriched("e-1"))))


def test_events_beyond_the_search_retention_are_counted_not_indexed() -> None:
    client = FakeClient()
    expired = count("expired")
    old = NOW - timedelta(days=91)
    b = batch(record(0, enriched("e-old", occurred=old)), record(1, enriched("e-new")))
    make_sink(client).write(b)
    assert [a["create"]["_id"] for a in client.bulks[0][::2]] == ["e-new"]
    assert count("expired") - expired == 1
    assert b.settled == {r.ref for r in b.records}


def test_alerts_use_external_versioning_by_revision() -> None:
    client = FakeClient({"a-1": [201, 409]})
    dup = count("duplicate")
    sink = make_sink(client)
    sink.write(batch(record(0, alert(2), ALERTS)))
    sink.write(batch(record(1, alert(1), ALERTS)))
    action = client.bulks[0][0]
    assert action == {
        "index": {
            "_index": "audit-alerts-2025.02",
            "_id": "a-1",
            "version": 2,
            "version_type": "external",
        }
    }
    assert client.bulks[0][1]["event"]["kind"] == "alert"
    assert count("duplicate") - dup == 1  # the stale revision is done, not an error
    assert client.mgets == []


def test_undecodable_records_are_counted_as_errors_and_kept_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeClient()
    err = count("error")
    truncated = enriched("e-1")[:30]  # a known schema, a broken body
    b = batch(record(0, truncated))
    with caplog.at_level(logging.ERROR):
        make_sink(client).write(b)
    assert client.bulks == []
    assert count("error") - err == 1
    assert "does not decode" in caplog.text
    assert b.settled == {b.records[0].ref}


def test_an_unknown_schema_stops_the_sink() -> None:
    with pytest.raises(SinkError, match="upgrade the sink"):
        make_sink(FakeClient()).write(batch(record(0, b"\xc3\x01" + b"\x00" * 8 + b"body")))
