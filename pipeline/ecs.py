"""Elastic Common Schema documents for OpenSearch, built from our Avro records.

Pure functions, no I/O. Analysts search with ECS names (``@timestamp``,
``event.action``, ``user.name``, ``source.ip`` …) so their habits and Sigma
rules carry over; what ECS has no name for lives under ``auditstream.*``.

Enrichment context (EnrichedEvent v2) lands in ECS fields where ECS has one
(``source.geo.*`` with ``source.geo.location`` a geo_point ``{lat, lon}``,
``source.as.*``, ``user.full_name``, ``user.email``, ``user_agent.*``) and
under ``auditstream.*`` where it has none (``auditstream.source.network_type``,
``auditstream.directory.*``, ``auditstream.user_agent.is_bot``,
``auditstream.resource.{sensitivity,data_categories,classification_rule}``).

Time (DESIGN, Time): ``@timestamp`` is when the access occurred (the producer's
clock), ``event.created`` when Kafka received it, ``event.ingested`` when the
sink wrote it (set by the sink, not here). Null values are left out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

EVENTS_DATASET = "auditstream.access"
ALERTS_DATASET = "auditstream.alert"

# action → (event.category, event.type), using ECS allowed values only.
_ACTIONS: dict[str, tuple[list[str], list[str]]] = {
    "login": (["authentication"], ["start"]),
    "logout": (["authentication"], ["end"]),
    "grant": (["iam"], ["change"]),
    "revoke": (["iam"], ["deletion"]),
    "admin": (["configuration"], ["change"]),
    "read": (["file"], ["access"]),
    "write": (["file"], ["change"]),
    "create": (["file"], ["creation"]),
    "update": (["file"], ["change"]),
    "delete": (["file"], ["deletion"]),
}
# Data actions on a database keep ECS's database category (allowed: access, change, info).
_DATABASE_RESOURCES = frozenset({"database", "db", "table", "collection", "schema"})
_DATABASE_TYPES: dict[str, str] = {
    "access": "access",
    "change": "change",
    "creation": "change",
    "deletion": "change",
}

# Alert severity → ECS event.severity (the numbers Elastic's detection rules use).
SEVERITY_SCORES: dict[str, int] = {"low": 21, "medium": 47, "high": 73, "critical": 99}


def iso(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds, e.g. ``2025-03-01T12:00:00.123456Z``."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def categorize(action: str, resource_type: str | None) -> tuple[list[str], list[str]]:
    """ECS ``event.category`` and ``event.type`` for an action on a kind of resource."""
    known = _ACTIONS.get(action)
    if known is None:
        return [], ["info"]
    category, types = known
    if category == ["file"] and (resource_type or "").lower() in _DATABASE_RESOURCES:
        return ["database"], [_DATABASE_TYPES[t] for t in types]
    return list(category), list(types)


def label_key(key: str) -> str:
    """ECS label keys carry no dots (a dot would make an object and can clash with a value)."""
    return key.replace(".", "_")


def to_document(enriched: Mapping[str, Any]) -> dict[str, Any]:
    """The ECS document for one decoded EnrichedEvent (``event.ingested`` not set)."""
    event: Mapping[str, Any] = enriched["event"]
    actor: Mapping[str, Any] = event["actor"]
    resource: Mapping[str, Any] | None = event.get("resource")
    source: Mapping[str, Any] = event.get("source") or {}
    service: Mapping[str, Any] = event["service"]
    auth: Mapping[str, Any] | None = event.get("auth")
    category, types = categorize(event["action"], resource["type"] if resource else None)
    # Enrichment context (EnrichedEvent v2; absent or null in v1 records).
    geo: Mapping[str, Any] = enriched.get("geo") or {}
    as_info: Mapping[str, Any] = enriched.get("as_info") or {}
    person: Mapping[str, Any] = enriched.get("directory") or {}
    agent: Mapping[str, Any] = enriched.get("user_agent") or {}
    label: Mapping[str, Any] = enriched.get("classification") or {}

    doc: dict[str, Any] = {
        "@timestamp": iso(event["occurred_at"]),
        "event": {
            "id": event["event_id"],
            "kind": "event",
            "dataset": EVENTS_DATASET,
            "action": event["action"],
            "outcome": event.get("outcome") or "unknown",
            "category": category or None,
            "type": types,
            "reason": event.get("reason"),
            "created": iso(enriched["received_at"]),
            "hash": enriched["content_hash"],
        },
        "user": {
            "id": actor["id"],
            "name": actor.get("name"),
            "full_name": person.get("display_name"),
            "email": person.get("email"),
        },
        "organization": {"id": actor.get("tenant")},
        "source": {
            "ip": source.get("ip"),
            "port": source.get("port"),
            "geo": {
                "country_iso_code": geo.get("country_iso_code"),
                "country_name": geo.get("country_name"),
                "region_name": geo.get("region_name"),
                "city_name": geo.get("city_name"),
                "continent_code": geo.get("continent_code"),
                "location": _geo_point(geo.get("location")),
            },
            "as": {
                "number": as_info.get("number"),
                "organization": {"name": as_info.get("organization")},
            },
        },
        "user_agent": {
            "original": source.get("user_agent"),
            "name": agent.get("name"),
            "version": agent.get("version"),
            "os": {"name": agent.get("os_name"), "version": agent.get("os_version")},
            "device": {"name": agent.get("device")},
        },
        "service": {"name": service["name"], "environment": service.get("environment")},
        "host": {"name": service.get("host")},
        "http": {"request": {"id": event.get("request_id")}},
        "labels": {label_key(k): v for k, v in (event.get("attributes") or {}).items()},
        "auditstream": {
            "actor": {"type": actor.get("type")},
            "resource": (
                {
                    "type": resource["type"],
                    "id": resource["id"],
                    "name": resource.get("name"),
                    "sensitivity": label.get("sensitivity"),
                    "data_categories": list(label.get("data_categories") or []) or None,
                    "classification_rule": label.get("rule"),
                }
                if resource
                else None
            ),
            "source": {"network_type": enriched.get("network_type")},
            "directory": {
                "department": person.get("department"),
                "title": person.get("title"),
                "manager": person.get("manager"),
                "privileged": person.get("privileged"),
                "employment_status": person.get("employment_status"),
            },
            "user_agent": {"is_bot": agent.get("is_bot")},
            "session_id": event.get("session_id"),
            "auth": {"method": auth.get("method"), "mfa": auth.get("mfa")} if auth else None,
            "schema_version": event.get("schema_version"),
            "encoding": enriched.get("encoding"),
            "writer_schema": enriched.get("writer_schema"),
            "kafka": {
                "topic": enriched["source_topic"],
                "partition": enriched["source_partition"],
                "offset": enriched["source_offset"],
            },
            "enrichment_errors": list(enriched.get("enrichment_errors") or []) or None,
        },
    }
    pruned: dict[str, Any] = prune(doc)
    return pruned


def alert_to_document(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The ECS document for one decoded Alert (``event.ingested`` not set)."""
    severity = str(alert["severity"])
    entity_type = str(alert["entity_type"])
    entity_id = str(alert["entity_id"])
    doc: dict[str, Any] = {
        "@timestamp": iso(alert["last_seen"]),
        "message": alert["summary"],
        "event": {
            "id": alert["alert_id"],
            "kind": "alert",
            "dataset": ALERTS_DATASET,
            "severity": SEVERITY_SCORES.get(severity, SEVERITY_SCORES["medium"]),
            "start": iso(alert["first_seen"]),
            "end": iso(alert["last_seen"]),
        },
        "rule": {"name": alert["detector"]},
        "labels": {label_key(k): v for k, v in (alert.get("attributes") or {}).items()},
        "auditstream": {
            "alert": {
                "id": alert["alert_id"],
                "revision": alert["revision"],
                "severity": severity,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "summary": alert["summary"],
                "first_seen": iso(alert["first_seen"]),
                "event_count": alert["event_count"],
                "event_ids": list(alert.get("event_ids") or []) or None,
                "opened_by": {
                    "partition": alert.get("opened_by_partition"),
                    "offset": alert.get("opened_by_offset"),
                },
            }
        },
    }
    # Version 2 explains itself: a title, ATT&CK techniques, the controls it serves.
    if alert.get("title"):
        doc["rule"]["description"] = alert["title"]
        doc["auditstream"]["alert"]["title"] = alert["title"]
    techniques = list(alert.get("mitre_techniques") or [])
    if techniques:
        doc["threat"] = {"framework": "MITRE ATT&CK", "technique": {"id": techniques}}
    doc["tags"] = list(alert.get("compliance") or []) or None
    doc["auditstream"]["alert"]["folded"] = alert.get("folded")
    window = alert.get("window_seconds")
    doc["auditstream"]["alert"]["window_seconds"] = None if window is None else round(window)
    # Pivot fields, so an analyst can jump from the alert to the events.
    if entity_type == "user":
        doc["user"] = {"id": entity_id}
    elif entity_type in ("source_ip", "ip") and _is_ip(entity_id):
        doc["source"] = {"ip": entity_id}
    if alert.get("actor_id"):
        doc.setdefault("user", {"id": alert["actor_id"]})
    if alert.get("source_ip") and _is_ip(str(alert["source_ip"])):
        doc.setdefault("source", {"ip": alert["source_ip"]})
    pruned: dict[str, Any] = prune(doc)
    return pruned


def prune(value: Any) -> Any:
    """Drop null values and the empty objects and lists they leave behind."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = prune(item)
            if item is None or item == {} or item == []:
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [prune(v) for v in value if v is not None]
    return value


def field_paths(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf of ``doc`` by dotted path (list values stay whole), for tests and tools."""
    paths: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            paths.update(field_paths(value, path + "."))
        else:
            paths[path] = value
    return paths


def _geo_point(location: Mapping[str, Any] | None) -> dict[str, float] | None:
    """An ECS ``geo_point`` as an object (``{"lat", "lon"}``), the form OpenSearch reads back."""
    if not location or location.get("lat") is None or location.get("lon") is None:
        return None
    return {"lat": float(location["lat"]), "lon": float(location["lon"])}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
