"""Fixture factories for the search and retention tests: ECS documents indexed with the real
template through the bulk API, exactly as the OpenSearch sink writes them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from opensearchpy import OpenSearch

from pipeline import ecs
from pipeline.settings import Settings
from pipeline.sinks.opensearch import alerts_index, events_index, install_templates, make_client
from pipeline.stages.validate import content_hash
from tests.factories import make_event


def with_prefixes(settings: Settings, tag: str | None = None) -> Settings:
    """``settings`` with index prefixes of its own (``it-<tag>-events`` / ``-alerts``)."""
    tag = tag or uuid.uuid4().hex[:8]
    opensearch = settings.opensearch.model_copy(
        update={
            "events_index_prefix": f"it-{tag}-events",
            "alerts_index_prefix": f"it-{tag}-alerts",
        }
    )
    return settings.model_copy(update={"opensearch": opensearch})


def event_doc(
    settings: Settings,
    *,
    occurred_at: datetime,
    partition: int = 0,
    offset: int = 0,
    **overrides: Any,
) -> tuple[str, str, dict[str, Any]]:
    """(index, _id, document) for one access event, as the sink would write it."""
    event = make_event(occurred_at=occurred_at, **overrides)
    enriched = {
        "event": event,
        "content_hash": content_hash(event),
        "received_at": occurred_at + timedelta(milliseconds=40),
        "source_topic": settings.topics.input,
        "source_partition": partition,
        "source_offset": offset,
        "encoding": "single_object",
        "writer_schema": "access-events-value v1",
        "enrichment_errors": [],
    }
    doc = ecs.to_document(enriched)
    doc["event"]["ingested"] = ecs.iso(occurred_at + timedelta(seconds=1))
    prefix = settings.opensearch.events_index_prefix
    index = events_index(prefix, occurred_at, settings.opensearch.index_granularity)
    return index, event["event_id"], doc


def alert_doc(
    settings: Settings,
    *,
    first_seen: datetime,
    last_seen: datetime | None = None,
    user: str = "u00042",
    detector: str = "brute_force",
    severity: str = "high",
) -> tuple[str, str, dict[str, Any]]:
    last_seen = last_seen or first_seen + timedelta(minutes=5)
    alert = {
        "alert_id": f"alert-{uuid.uuid4().hex[:12]}",
        "revision": 1,
        "detector": detector,
        "severity": severity,
        "entity_type": "user",
        "entity_id": user,
        "summary": f"{detector} on {user}",
        "first_seen": first_seen,
        "last_seen": last_seen,
        "event_count": 10,
        "event_ids": [],
        "opened_by_partition": 0,
        "opened_by_offset": 1,
        "attributes": {},
    }
    doc = ecs.alert_to_document(alert)
    doc["event"]["ingested"] = ecs.iso(last_seen + timedelta(seconds=1))
    index = alerts_index(settings.opensearch.alerts_index_prefix, first_seen)
    return index, str(alert["alert_id"]), doc


def index_docs(
    settings: Settings, docs: Iterable[tuple[str, str, dict[str, Any]]], *, chunk: int = 2000
) -> OpenSearch:
    """Install the real templates, bulk-create the documents, refresh; returns the client."""
    client = make_client(settings.opensearch)
    install_templates(client, settings.opensearch)
    body: list[dict[str, Any]] = []

    def flush() -> None:
        if body:
            result = client.bulk(body=body)
            assert not result["errors"], [i for i in result["items"] if "error" in str(i)][:3]
            body.clear()

    for index, doc_id, doc in docs:
        body.append({"create": {"_index": index, "_id": doc_id}})
        body.append(doc)
        if len(body) >= 2 * chunk:
            flush()
    flush()
    client.indices.refresh(index=f"{settings.opensearch.events_index_prefix}-*")
    client.indices.refresh(
        index=f"{settings.opensearch.alerts_index_prefix}-*", params={"allow_no_indices": "true"}
    )
    return client


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]
