"""Access events as Python dicts, and their JSON form for ``produce`` and logs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.errors import ValidationError

_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "schema_version": 1,
    "reason": None,
    "resource": None,
    "session_id": None,
    "request_id": None,
    "auth": None,
    "attributes": {},
}


def parse_time(value: Any, field: str = "occurred_at") -> datetime:
    """An ISO 8601 string (``Z`` or offset) or integer microseconds, as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be an ISO 8601 time or microseconds")
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1_000_000, tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"{field} {value!r} is not an ISO 8601 time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if value is None:
        raise ValidationError(f"{field} is missing", reason="missing_field")
    raise ValidationError(f"{field} must be an ISO 8601 time or microseconds")


def event_from_json(obj: Any) -> dict[str, Any]:
    """Turn a JSON object into an event dict ready to encode, filling optional defaults."""
    if not isinstance(obj, dict):
        raise ValidationError("an event must be a JSON object")
    event = {**_OPTIONAL_DEFAULTS, **obj}
    event["occurred_at"] = parse_time(event.get("occurred_at"))
    for section in ("actor", "source", "service"):
        if not isinstance(event.get(section), dict):
            raise ValidationError(f"{section} is missing", reason="missing_field")
    event["actor"] = {"type": "unknown", "name": None, "tenant": None, **event["actor"]}
    event["source"] = {"ip": None, "port": None, "user_agent": None, **event["source"]}
    event["service"] = {"host": None, "environment": None, **event["service"]}
    if isinstance(event.get("resource"), dict):
        event["resource"] = {"name": None, **event["resource"]}
    if isinstance(event.get("auth"), dict):
        event["auth"] = {"method": None, "mfa": None, **event["auth"]}
    event.setdefault("outcome", "unknown")
    return event


def event_to_json(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of an event dict: times as ISO 8601 UTC."""

    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, bytes):
            return value.hex()
        return value

    result: dict[str, Any] = convert(event)
    return result
