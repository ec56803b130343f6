"""Building the query of ``auditstream search`` and ``timeline`` from the command line.

A Lucene query string or a ``--dsl`` JSON query, combined with filters
(``--since/--until``, ``--user``, ``--ip``, ``--action``, ``--outcome``) into one
``bool`` query. Pure functions, no I/O; errors are :class:`QueryError` with a
message that says what to fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.errors import AuditstreamError

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# DSL clauses that search many fields at once: an analyst must name the fields.
_MULTI_FIELD = ("query_string", "simple_query_string", "multi_match", "combined_fields")
# The one order every page follows: time, then the unique event id as a tie-breaker.
SORT_ASC = [{"@timestamp": "asc"}, {"event.id": "asc"}]
SORT_DESC = [{"@timestamp": "desc"}, {"event.id": "desc"}]


class QueryError(AuditstreamError):
    """The query or a filter is malformed; the message says what is wrong."""


def parse_when(value: str, now: datetime, name: str = "--since") -> datetime:
    """``2025-03-01``, ``2025-03-01T12:00:00Z``, or a span back from now: ``15m``, ``7d``."""
    text = value.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"{name} {value!r} is neither an ISO 8601 time (2025-03-01T12:00:00Z) "
            "nor a span like 15m, 24h, 7d"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_dsl(text: str) -> dict[str, Any]:
    """A query clause from ``--dsl``: a bare clause or ``{"query": clause}``."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QueryError(
            f"--dsl is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(parsed, dict) or not parsed:
        raise QueryError('--dsl must be a JSON object: a query clause or {"query": {...}}')
    if "query" in parsed:
        extra = sorted(set(parsed) - {"query"})
        if extra:
            raise QueryError(f"--dsl takes a query only; remove {', '.join(extra)}")
        clause = parsed["query"]
        if not isinstance(clause, dict):
            raise QueryError('--dsl: "query" must be a JSON object')
        return clause
    return parsed


def multi_field_clauses(clause: Any) -> list[str]:
    """Names of clauses in a DSL query that search fields it does not name."""
    found: list[str] = []
    if isinstance(clause, dict):
        for key, value in clause.items():
            if (
                key in _MULTI_FIELD
                and isinstance(value, dict)
                and not (value.get("fields") or value.get("default_field"))
            ):
                found.append(key)
            found.extend(multi_field_clauses(value))
    elif isinstance(clause, list):
        for item in clause:
            found.extend(multi_field_clauses(item))
    return found


@dataclass
class Filters:
    """What the caller asked for, before it becomes a query."""

    lucene: str | None = None
    dsl: dict[str, Any] | None = None
    since: datetime | None = None
    until: datetime | None = None
    users: list[str] = field(default_factory=list)
    user_fields: tuple[str, ...] = ("user.id", "user.name")
    ips: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    text_fields: list[str] | None = None  # fields a Lucene query searches (None: all)

    def describe(self) -> str:
        """The query as recorded in the access event: compact, stable JSON."""
        return json.dumps(
            {
                k: v
                for k, v in {
                    "lucene": self.lucene,
                    "dsl": self.dsl,
                    "since": self.since.isoformat() if self.since else None,
                    "until": self.until.isoformat() if self.until else None,
                    "user": self.users or None,
                    "ip": self.ips or None,
                    "action": self.actions or None,
                    "outcome": self.outcomes or None,
                }.items()
                if v is not None
            },
            sort_keys=True,
            separators=(",", ":"),
        )


def build_query(filters: Filters) -> dict[str, Any]:
    """One ``bool`` query: the caller's query as ``must``, every filter as ``filter``."""
    must: list[dict[str, Any]] = []
    if filters.lucene and filters.lucene.strip():
        query_string: dict[str, Any] = {
            "query": filters.lucene,
            "default_operator": "AND",
            "analyze_wildcard": True,
        }
        if filters.text_fields is not None:
            query_string["fields"] = filters.text_fields
            query_string["lenient"] = True
        must.append({"query_string": query_string})
    if filters.dsl is not None:
        must.append(filters.dsl)
    clauses: list[dict[str, Any]] = []
    if filters.since or filters.until:
        if filters.since and filters.until and filters.since >= filters.until:
            raise QueryError("--since must be before --until")
        span: dict[str, Any] = {"format": "strict_date_optional_time"}
        if filters.since:
            span["gte"] = _iso(filters.since)
        if filters.until:
            span["lt"] = _iso(filters.until)
        clauses.append({"range": {"@timestamp": span}})
    if filters.users:
        clauses.append(_any_of(filters.user_fields, filters.users))
    for name, values in (
        ("source.ip", filters.ips),
        ("event.action", filters.actions),
        ("event.outcome", filters.outcomes),
    ):
        if values:
            clauses.append({"terms": {name: values}})
    return {"bool": {"must": must or [{"match_all": {}}], "filter": clauses}}


def _any_of(fields: Iterable[str], values: list[str]) -> dict[str, Any]:
    return {"bool": {"should": [{"terms": {f: values}} for f in fields], "minimum_should_match": 1}}


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def mapped_fields(properties: dict[str, Any], prefix: str = "") -> list[str]:
    """Every searchable leaf field (and multi-field) of a mapping's ``properties``."""
    found: list[str] = []
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            found.extend(mapped_fields(spec["properties"], path + "."))
            continue
        if spec.get("type") in (None, "object", "geo_point", "boolean"):
            continue
        found.append(path)
        for sub in spec.get("fields", {}):
            found.append(f"{path}.{sub}")
    return found
