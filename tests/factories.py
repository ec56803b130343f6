"""Fixture factories shared by unit and integration tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any


def make_event(**overrides: Any) -> dict[str, Any]:
    """A complete, valid access event; keyword arguments replace top-level fields."""
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "occurred_at": datetime.now(tz=UTC).replace(microsecond=123456) - timedelta(seconds=5),
        "actor": {"id": "u00042", "type": "user", "name": "ada@example.com", "tenant": "acme"},
        "action": "login",
        "outcome": "success",
        "reason": None,
        "resource": {"type": "application", "id": "portal", "name": "Portal"},
        "source": {"ip": "81.2.69.160", "port": 51234, "user_agent": "Mozilla/5.0"},
        "service": {"name": "sso", "host": "sso-1", "environment": "production"},
        "session_id": "s-1",
        "request_id": "r-1",
        "auth": {"method": "password", "mfa": True},
        "attributes": {"department": "engineering"},
    }
    event.update(overrides)
    return event
