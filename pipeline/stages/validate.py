"""Validate: decoded access events that are complete and possible, or a reason why not.

Pure logic, no Kafka. The decisions depend only on the record and its Kafka
timestamp (DESIGN, Deterministic decisions).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.errors import ValidationError

# The fixed set of dead-letter reason codes (DESIGN, Metrics).
REASONS = (
    "undecodable",
    "unknown_schema",
    "missing_field",
    "invalid_field",
    "future_timestamp",
    "conflicting_duplicate",
)

EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
_ACTION = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
MAX_ATTRIBUTES = 64
MAX_TEXT = 4096


@dataclass(frozen=True)
class ValidEvent:
    """An access event that passed validation, with what later stages need."""

    event: dict[str, Any]
    content_hash: str
    occurred_at: datetime


def to_micros(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def _canonical_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_micros(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot hash a {type(value).__name__}")


def content_hash(event: dict[str, Any]) -> str:
    """SHA-256 of the decoded fields in canonical JSON: equal events hash equal."""
    text = json.dumps(
        event, sort_keys=True, separators=(",", ":"), default=_canonical_default, ensure_ascii=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _require(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{field} is missing or empty", reason="missing_field")
    if len(value) > MAX_TEXT:
        raise ValidationError(f"{field} is longer than {MAX_TEXT} characters")
    return value


def validate(
    event: dict[str, Any], *, record_timestamp_ms: int, max_future_skew_s: float
) -> ValidEvent:
    """Check one decoded event; raise :class:`ValidationError` with a reason code."""
    event_id = _require(event.get("event_id"), "event_id")
    try:
        uuid.UUID(event_id)
    except ValueError:
        raise ValidationError(f"event_id {event_id!r} is not a UUID") from None
    actor = event.get("actor") or {}
    _require(actor.get("id"), "actor.id")
    service = event.get("service") or {}
    _require(service.get("name"), "service.name")
    action = _require(event.get("action"), "action")
    if not _ACTION.match(action):
        raise ValidationError(f"action {action!r} is not a lower-case verb like 'login' or 'read'")
    if event.get("schema_version", 1) < 1:
        raise ValidationError(f"schema_version {event.get('schema_version')} is below 1")

    occurred_at = event.get("occurred_at")
    if isinstance(occurred_at, int) and not isinstance(occurred_at, bool):
        # A writer schema without the timestamp-micros logical type gives plain micros.
        occurred_at = event["occurred_at"] = from_micros(occurred_at)
    if not isinstance(occurred_at, datetime):
        raise ValidationError("occurred_at is missing", reason="missing_field")
    if occurred_at < EARLIEST_EVENT:
        raise ValidationError(f"occurred_at {occurred_at.isoformat()} is before 2000-01-01")
    received = datetime.fromtimestamp(record_timestamp_ms / 1000, tz=UTC)
    skew = (occurred_at - received).total_seconds()
    if skew > max_future_skew_s:
        raise ValidationError(
            f"occurred_at {occurred_at.isoformat()} is {skew:.0f} s after the record's "
            f"timestamp {received.isoformat()} (allowed: {max_future_skew_s:.0f} s)",
            reason="future_timestamp",
        )

    resource = event.get("resource")
    if resource is not None:
        _require(resource.get("type"), "resource.type")
        _require(resource.get("id"), "resource.id")
    source = event.get("source") or {}
    ip = source.get("ip")
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValidationError(f"source.ip {ip!r} is not an IP address") from None
    port = source.get("port")
    if port is not None and not 0 <= port <= 65535:
        raise ValidationError(f"source.port {port} is outside 0-65535")
    attributes = event.get("attributes") or {}
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValidationError(f"{len(attributes)} attributes; at most {MAX_ATTRIBUTES} allowed")
    for key, value in attributes.items():
        if len(key) > 256 or len(value) > MAX_TEXT:
            raise ValidationError(f"attribute {key[:40]!r} is too long")

    return ValidEvent(event=event, content_hash=content_hash(event), occurred_at=occurred_at)
