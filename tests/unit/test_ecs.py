"""ECS documents: the fields analysts search, their types, and that the templates hold them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline import ecs
from pipeline.sinks.opensearch import (
    ALERTS_TEMPLATE,
    EVENTS_TEMPLATE,
    load_template,
    render_template,
)

OCCURRED = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
RECEIVED = OCCURRED + timedelta(seconds=2, microseconds=5)
CORE_TYPES = {
    "keyword",
    "text",
    "date",
    "ip",
    "long",
    "integer",
    "boolean",
    "geo_point",
    "object",
    "nested",
}


def make_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "6f1c2d1e-4c7b-4f1e-9f3a-2b8e0c1d2e3f",
        "schema_version": 1,
        "occurred_at": OCCURRED,
        "actor": {"id": "u-42", "type": "user", "name": "alice", "tenant": "acme"},
        "action": "login",
        "outcome": "failure",
        "reason": "bad password",
        "resource": {"type": "account", "id": "acct-1", "name": "Alice's account"},
        "source": {"ip": "203.0.113.7", "port": 51234, "user_agent": "curl/8.5.0"},
        "service": {"name": "sso", "host": "sso-1", "environment": "prod"},
        "session_id": "s-1",
        "request_id": "r-1",
        "auth": {"method": "password", "mfa": False},
        "attributes": {"client": "cli", "geo.hint": "eu"},
    }
    event.update(overrides)
    return event


def make_enriched(**overrides: Any) -> dict[str, Any]:
    enriched: dict[str, Any] = {
        "event": make_event(),
        "content_hash": "ab" * 32,
        "received_at": RECEIVED,
        "source_topic": "access-events",
        "source_partition": 3,
        "source_offset": 1234,
        "encoding": "single_object",
        "writer_schema": "access-events-value v1",
        "enrichment_errors": ["geo: no database"],
    }
    enriched.update(overrides)
    return enriched


CONTEXT: dict[str, Any] = {
    "network_type": "public",
    "geo": {
        "country_iso_code": "GB",
        "country_name": "United Kingdom",
        "region_name": "England",
        "city_name": "London",
        "continent_code": "EU",
        "location": {"lat": 51.5142, "lon": -0.0931},
    },
    "as_info": {"number": 20712, "organization": "Andrews & Arnold Ltd"},
    "directory": {
        "display_name": "Alice Liddell",
        "email": "alice@example.com",
        "department": "finance",
        "title": "Controller",
        "manager": "u-7",
        "privileged": True,
        "employment_status": "active",
    },
    "user_agent": {
        "name": "Chrome",
        "version": "130.0.0.0",
        "os_name": "Windows",
        "os_version": "10",
        "device": None,
        "is_bot": False,
    },
    "classification": {
        "sensitivity": "restricted",
        "data_categories": ["PCI", "PII"],
        "rule": "payment-card-data",
    },
}


def make_alert(**overrides: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "alert_id": "al-1",
        "revision": 2,
        "detector": "brute_force",
        "severity": "high",
        "entity_type": "user",
        "entity_id": "u-42",
        "summary": "12 failed logins for u-42 in 5 minutes",
        "first_seen": OCCURRED - timedelta(minutes=5),
        "last_seen": OCCURRED,
        "event_count": 12,
        "event_ids": ["e1", "e2"],
        "opened_by_partition": 3,
        "opened_by_offset": 1200,
        "attributes": {"window": "5m"},
    }
    alert.update(overrides)
    return alert


# -- the event document ---------------------------------------------------------


def test_event_document_has_the_ecs_fields() -> None:
    doc = ecs.to_document(make_enriched())
    f = ecs.field_paths(doc)
    assert f["@timestamp"] == "2025-03-01T12:00:00.123456Z"
    assert f["event.id"] == "6f1c2d1e-4c7b-4f1e-9f3a-2b8e0c1d2e3f"
    assert f["event.kind"] == "event"
    assert f["event.dataset"] == "auditstream.access"
    assert f["event.action"] == "login"
    assert f["event.outcome"] == "failure"
    assert f["event.category"] == ["authentication"]
    assert f["event.type"] == ["start"]
    assert f["event.reason"] == "bad password"
    assert f["event.created"] == "2025-03-01T12:00:02.123461Z"
    assert f["event.hash"] == "ab" * 32
    assert "event.ingested" not in f  # the sink sets it when it writes
    assert f["user.id"] == "u-42"
    assert f["user.name"] == "alice"
    assert f["organization.id"] == "acme"
    assert f["source.ip"] == "203.0.113.7"
    assert f["source.port"] == 51234
    assert f["user_agent.original"] == "curl/8.5.0"
    assert f["service.name"] == "sso"
    assert f["service.environment"] == "prod"
    assert f["host.name"] == "sso-1"
    assert f["http.request.id"] == "r-1"
    assert f["labels.client"] == "cli"
    assert f["labels.geo_hint"] == "eu"  # dots would create objects: replaced
    assert f["auditstream.actor.type"] == "user"
    assert f["auditstream.resource.type"] == "account"
    assert f["auditstream.resource.id"] == "acct-1"
    assert f["auditstream.resource.name"] == "Alice's account"
    assert f["auditstream.session_id"] == "s-1"
    assert f["auditstream.auth.method"] == "password"
    assert f["auditstream.auth.mfa"] is False
    assert f["auditstream.schema_version"] == 1
    assert f["auditstream.kafka.topic"] == "access-events"
    assert f["auditstream.kafka.partition"] == 3
    assert f["auditstream.kafka.offset"] == 1234
    assert f["auditstream.enrichment_errors"] == ["geo: no database"]
    json.dumps(doc)  # plain JSON, nothing left to serialize


def test_enrichment_context_uses_ecs_names_and_auditstream_extras() -> None:
    doc = ecs.to_document(make_enriched(**CONTEXT))
    f = ecs.field_paths(doc)
    assert doc["source"]["geo"]["location"] == {"lat": 51.5142, "lon": -0.0931}  # geo_point
    assert f["source.geo.country_iso_code"] == "GB"
    assert f["source.geo.country_name"] == "United Kingdom"
    assert f["source.geo.region_name"] == "England"
    assert f["source.geo.city_name"] == "London"
    assert f["source.geo.continent_code"] == "EU"
    assert f["source.as.number"] == 20712
    assert f["source.as.organization.name"] == "Andrews & Arnold Ltd"
    assert f["auditstream.source.network_type"] == "public"
    assert f["user.full_name"] == "Alice Liddell"
    assert f["user.email"] == "alice@example.com"
    assert f["user.name"] == "alice"  # the actor's own name stays
    assert f["auditstream.directory.department"] == "finance"
    assert f["auditstream.directory.title"] == "Controller"
    assert f["auditstream.directory.manager"] == "u-7"
    assert f["auditstream.directory.privileged"] is True
    assert f["auditstream.directory.employment_status"] == "active"
    assert f["user_agent.original"] == "curl/8.5.0"
    assert f["user_agent.name"] == "Chrome"
    assert f["user_agent.version"] == "130.0.0.0"
    assert f["user_agent.os.name"] == "Windows"
    assert f["user_agent.os.version"] == "10"
    assert "user_agent.device.name" not in f  # null left out
    assert f["auditstream.user_agent.is_bot"] is False  # false is kept, it is an answer
    assert f["auditstream.resource.sensitivity"] == "restricted"
    assert f["auditstream.resource.data_categories"] == ["PCI", "PII"]
    assert f["auditstream.resource.classification_rule"] == "payment-card-data"
    json.dumps(doc)


def test_private_address_has_a_network_label_and_no_geo() -> None:
    doc = ecs.to_document(make_enriched(network_type="private", geo=None, as_info=None))
    assert doc["auditstream"]["source"] == {"network_type": "private"}
    assert set(doc["source"]) == {"ip", "port"}


def test_v1_documents_without_context_have_no_enrichment_fields() -> None:
    f = ecs.field_paths(ecs.to_document(make_enriched()))
    for gone in (
        "source.geo",
        "source.as",
        "user.full_name",
        "user.email",
        "user_agent.name",
        "auditstream.source",
        "auditstream.directory",
        "auditstream.user_agent",
        "auditstream.resource.sensitivity",
    ):
        assert not any(p == gone or p.startswith(gone + ".") for p in f), gone


def test_null_values_are_left_out() -> None:
    event = make_event(
        reason=None,
        resource=None,
        auth=None,
        session_id=None,
        request_id=None,
        attributes={},
        actor={"id": "svc-1", "type": "service", "name": None, "tenant": None},
        source={"ip": None, "port": None, "user_agent": None},
        service={"name": "batch", "host": None, "environment": None},
        outcome="success",
        action="read",
    )
    doc = ecs.to_document(make_enriched(event=event, enrichment_errors=[]))

    def walk(node: Any) -> None:
        assert node is not None
        if isinstance(node, dict):
            assert node, "empty object left behind"
            for value in node.values():
                walk(value)

    walk(doc)
    f = ecs.field_paths(doc)
    for gone in (
        "event.reason",
        "source.ip",
        "user.name",
        "organization.id",
        "labels",
        "host.name",
    ):
        assert not any(p == gone or p.startswith(gone + ".") for p in f), gone
    assert f["event.outcome"] == "success"
    assert f["auditstream.actor.type"] == "service"


@pytest.mark.parametrize(
    ("action", "resource_type", "category", "types"),
    [
        ("login", None, ["authentication"], ["start"]),
        ("logout", None, ["authentication"], ["end"]),
        ("grant", "role", ["iam"], ["change"]),
        ("revoke", "role", ["iam"], ["deletion"]),
        ("admin", "setting", ["configuration"], ["change"]),
        ("read", "document", ["file"], ["access"]),
        ("write", "document", ["file"], ["change"]),
        ("delete", "document", ["file"], ["deletion"]),
        ("read", "table", ["database"], ["access"]),
        ("delete", "database", ["database"], ["change"]),
        ("export", "document", [], ["info"]),
    ],
)
def test_actions_map_to_ecs_categories(
    action: str, resource_type: str | None, category: list[str], types: list[str]
) -> None:
    assert ecs.categorize(action, resource_type) == (category, types)


def test_unknown_action_has_no_category_but_a_type() -> None:
    doc = ecs.to_document(make_enriched(event=make_event(action="export")))
    assert "category" not in doc["event"]
    assert doc["event"]["type"] == ["info"]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ecs.iso(datetime(2025, 1, 1))


# -- the alert document ---------------------------------------------------------


def test_alert_document() -> None:
    doc = ecs.alert_to_document(make_alert())
    f = ecs.field_paths(doc)
    assert f["@timestamp"] == "2025-03-01T12:00:00.123456Z"  # last_seen
    assert f["event.kind"] == "alert"
    assert f["event.severity"] == 73
    assert f["rule.name"] == "brute_force"
    assert f["message"] == "12 failed logins for u-42 in 5 minutes"
    assert f["auditstream.alert.id"] == "al-1"
    assert f["auditstream.alert.revision"] == 2
    assert f["auditstream.alert.severity"] == "high"
    assert f["auditstream.alert.entity_type"] == "user"
    assert f["auditstream.alert.entity_id"] == "u-42"
    assert f["auditstream.alert.first_seen"] == "2025-03-01T11:55:00.123456Z"
    assert f["auditstream.alert.event_count"] == 12
    assert f["auditstream.alert.event_ids"] == ["e1", "e2"]
    assert f["user.id"] == "u-42"  # pivot to the entity's events
    assert f["labels.window"] == "5m"


V2_ALERT_FIELDS: dict[str, Any] = {
    "title": "Brute force against u-42",
    "folded": 3,
    "actor_id": "u-42",
    "source_ip": "198.51.100.9",
    "window_seconds": 120.0,
    "mitre_techniques": ["T1110.001"],
    "compliance": ["PCI DSS 10.2.4"],
}


def test_a_version_2_alert_explains_itself_in_ecs_names() -> None:
    f = ecs.field_paths(ecs.alert_to_document(make_alert(**V2_ALERT_FIELDS)))
    assert f["rule.description"] == f["auditstream.alert.title"] == "Brute force against u-42"
    assert f["threat.framework"] == "MITRE ATT&CK"
    assert f["threat.technique.id"] == ["T1110.001"]
    assert f["tags"] == ["PCI DSS 10.2.4"]
    assert f["source.ip"] == "198.51.100.9"  # the attacker, beside the user it targeted
    assert f["auditstream.alert.folded"] == 3


def test_alert_on_an_ip_pivots_to_source_ip() -> None:
    doc = ecs.alert_to_document(make_alert(entity_type="source_ip", entity_id="198.51.100.9"))
    assert doc["source"] == {"ip": "198.51.100.9"}
    assert "user" not in doc
    odd = ecs.alert_to_document(make_alert(entity_type="source_ip", entity_id="not-an-ip"))
    assert "source" not in odd


@pytest.mark.parametrize(("severity", "score"), [("low", 21), ("medium", 47), ("critical", 99)])
def test_alert_severity_scores(severity: str, score: int) -> None:
    assert ecs.alert_to_document(make_alert(severity=severity))["event"]["severity"] == score


# -- the templates hold every field ---------------------------------------------


def _mapping_for(template: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The mapping of a dotted field path; labels.* resolve through the dynamic template."""
    mappings = template["template"]["mappings"]
    node: dict[str, Any] = {"properties": mappings["properties"]}
    parts = path.split(".")
    for i, part in enumerate(parts):
        props = node.get("properties", {})
        if part not in props:
            if node.get("dynamic") is True:
                for entry in mappings.get("dynamic_templates", []):
                    (rule,) = entry.values()
                    if re.fullmatch(rule["path_match"].replace("*", ".*"), ".".join(parts)):
                        return dict(rule["mapping"])
            return None
        node = props[part]
        if node.get("type") == "geo_point":  # an object value ({lat, lon}) in one field
            return node
        if i < len(parts) - 1 and "properties" not in node and node.get("type") != "object":
            return None
    return node


def _assert_fits(value: Any, mapping: dict[str, Any], path: str) -> None:
    kind = mapping.get("type", "object")
    values = value if isinstance(value, list) else [value]
    for v in values:
        if kind == "geo_point":
            assert path.endswith((".lat", ".lon")) and isinstance(v, float), path
        elif isinstance(v, bool):
            assert kind == "boolean", path
        elif isinstance(v, int):
            assert kind in ("long", "integer"), path
        elif isinstance(v, str):
            assert kind in ("keyword", "text", "ip", "date"), path
            if kind == "date":
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", v), path
        else:
            raise AssertionError(f"{path}: unexpected value {v!r}")


@pytest.mark.parametrize(
    ("template_file", "documents"),
    [
        (
            EVENTS_TEMPLATE,
            [
                ecs.to_document(make_enriched()),
                ecs.to_document(make_enriched(event=make_event(action="read", resource=None))),
                ecs.to_document(make_enriched(**CONTEXT)),
                ecs.to_document(
                    make_enriched(
                        **{**CONTEXT, "user_agent": {**CONTEXT["user_agent"], "device": "Spider"}}
                    )
                ),
            ],
        ),
        (
            ALERTS_TEMPLATE,
            [
                ecs.alert_to_document(make_alert()),
                ecs.alert_to_document(make_alert(entity_type="source_ip", entity_id="::1")),
                ecs.alert_to_document(make_alert(**V2_ALERT_FIELDS)),
            ],
        ),
    ],
)
def test_every_field_a_document_can_have_is_in_the_template(
    template_file: str, documents: list[dict[str, Any]]
) -> None:
    template = load_template(template_file)
    for doc in documents:
        doc = {**doc, "event": {**doc["event"], "ingested": ecs.iso(OCCURRED)}}
        for path, value in ecs.field_paths(doc).items():
            mapping = _mapping_for(template, path)
            assert mapping is not None, f"{path} is not mapped in {template_file}"
            _assert_fits(value, mapping, path)


def _all_types(properties: dict[str, Any]) -> set[str]:
    types: set[str] = set()
    for mapping in properties.values():
        types.add(mapping.get("type", "object"))
        types |= _all_types(mapping.get("properties", {}))
        types |= _all_types(mapping.get("fields", {}))
    return types


@pytest.mark.parametrize("template_file", [EVENTS_TEMPLATE, ALERTS_TEMPLATE])
def test_templates_use_only_core_types_and_are_strict(template_file: str) -> None:
    template = load_template(template_file)
    mappings = template["template"]["mappings"]
    assert mappings["dynamic"] == "strict"
    assert _all_types(mappings["properties"]) <= CORE_TYPES
    assert mappings["properties"]["labels"] == {"type": "object", "dynamic": True}
    assert mappings["properties"]["source"]["properties"]["geo"]["properties"]["location"] == {
        "type": "geo_point"
    }
    assert mappings["properties"]["source"]["properties"]["as"]["properties"]["number"] == {
        "type": "long"
    }


def test_shipped_templates_name_the_default_indices_and_aliases() -> None:
    for name in ("audit-events", "audit-alerts"):
        path = Path(__file__).resolve().parents[2] / "deploy" / "opensearch"
        template = json.loads((path / f"{name}.template.json").read_text())
        assert template["index_patterns"] == [f"{name}-*"]
        assert template["template"]["aliases"] == {name: {}}


def test_rendered_template_follows_settings() -> None:
    body = render_template(load_template(EVENTS_TEMPLATE), "audit-events-t1", shards=3, replicas=1)
    assert body["index_patterns"] == ["audit-events-t1-*"]
    assert body["template"]["aliases"] == {"audit-events-t1": {}}
    assert body["template"]["settings"]["index"]["number_of_shards"] == 3
    assert body["template"]["settings"]["index"]["number_of_replicas"] == 1
    default = render_template(load_template(EVENTS_TEMPLATE), "audit-events", shards=1, replicas=0)
    assert body["priority"] > default["priority"]  # the more specific pattern wins
