"""Replay against the real stack: an empty OpenSearch gets the live path's documents back."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opensearchpy import OpenSearch, helpers

from pipeline.codec import Encoding, encode
from pipeline.integrity.replay import replay, restore_prefix
from pipeline.schemas import ACCESS_EVENT, default_store
from pipeline.settings import Settings, to_env
from pipeline.sinks.commands import archive_runner, opensearch_runner
from pipeline.sinks.opensearch import make_client
from pipeline.worker.processor import InputRecord, Processor
from tests.factories import make_event
from tests.integration.processes import read_topic
from tests.integration.test_sinks import _with, alert_value, lag, produce, running, wait_until

STORE = default_store()
RECENT, OLD = 300, 20


@pytest.fixture
def replay_settings(pipeline_settings: Settings) -> Settings:
    """Own index prefixes, small fast batches, and a one-day search retention."""
    tag = uuid.uuid4().hex[:8]
    return _with(
        pipeline_settings,
        opensearch={
            "events_index_prefix": f"it-{tag}-events",
            "alerts_index_prefix": f"it-{tag}-alerts",
        },
        retention={"events_days": 1},
        sink={
            "batch_max_records": 200,
            "batch_max_ms": 200,
            "archive_max_records": 150,
            "archive_max_ms": 200,
            "retry_initial_s": 0.2,
            "retry_max_s": 1.0,
        },
    )


def documents(client: OpenSearch, prefix: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every document under the alias ``prefix``: id → (index suffix, source without ingested)."""
    if not client.indices.exists_alias(name=prefix):
        return {}
    client.indices.refresh(index=f"{prefix}-*")
    found = {}
    for hit in helpers.scan(client, index=prefix):
        source = hit["_source"]
        source.get("event", {}).pop("ingested", None)
        found[hit["_id"]] = (hit["_index"].removeprefix(f"{prefix}-"), source)
    return found


def live_path(settings: Settings) -> list[dict[str, Any]]:
    """Produce events, run the worker's decisions in-process and both sinks until caught up."""
    topics = settings.topics
    access = STORE.latest(ACCESS_EVENT)
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        make_event(
            actor={"id": f"u{i % 17:05d}", "type": "user", "name": f"user{i % 17}", "tenant": "t"},
            action=("login", "read", "write", "grant")[i % 4],
            outcome="failure" if i % 9 == 0 else "success",
            reason="permission_denied" if i % 9 == 0 else None,
        )
        for i in range(RECENT)
    ]
    # Beyond the one-day search retention: archived, not indexed by the live sink.
    events += [make_event(occurred_at=now - timedelta(days=3, minutes=i)) for i in range(OLD)]
    messages: list[Any] = [
        (e["actor"]["id"].encode(), encode(e, access, Encoding.SINGLE_OBJECT), None, i % 3)
        for i, e in enumerate(events)
    ]
    delivered = produce(settings, topics.input, messages)
    processor = Processor(settings, STORE)
    outputs: dict[str, list[Any]] = defaultdict(list)
    for msg in read_topic(settings, topics.input, len(delivered)):
        for out in processor.process(InputRecord.from_message(msg)):
            outputs[out.topic].append((out.key, out.value, out.headers or None, msg.partition()))
    enriched = outputs[topics.enriched]
    assert len(enriched) == RECENT + OLD and not outputs[topics.dead_letter]
    # At-least-once: a crash made the worker emit five events, and an alert revision, again.
    produce(settings, topics.enriched, enriched + enriched[:5])
    seen = now - timedelta(minutes=2)
    produce(
        settings,
        topics.alerts,
        [(b"alert-it-1", alert_value(r, seen + timedelta(seconds=r)), None, 0) for r in (1, 2, 2)],
    )
    archive_topics = [topics.input, topics.enriched, topics.dead_letter, topics.alerts]
    with running(archive_runner(settings)), running(opensearch_runner(settings)):
        wait_until(
            "both sinks to catch up",
            lambda: (
                lag(settings, settings.groups.sink_archive, archive_topics) == 0
                and lag(settings, settings.groups.sink_opensearch, [topics.enriched, topics.alerts])
                == 0
            ),
        )
    return events


def test_replay_into_empty_indices_gives_the_live_documents_and_restores_old_ones(
    replay_settings: Settings,
) -> None:
    settings = replay_settings
    events = live_path(settings)
    client = make_client(settings.opensearch)
    live = documents(client, settings.opensearch.events_index_prefix)
    live_alerts = documents(client, settings.opensearch.alerts_index_prefix)
    assert len(live) == RECENT and len(live_alerts) == 1

    tag = uuid.uuid4().hex[:8]
    target = _with(
        settings,
        opensearch={
            "events_index_prefix": f"it-{tag}-events",
            "alerts_index_prefix": f"it-{tag}-alerts",
        },
    )
    events_prefix = target.opensearch.events_index_prefix
    restore = restore_prefix(events_prefix)
    assert documents(client, events_prefix) == {}
    progress = io.StringIO()
    counts = replay(target, None, None, progress=progress)
    print(f"\nreplay: {counts.summary()}")
    assert (counts.events, counts.restored, counts.alerts) == (RECENT, OLD, 2)
    assert counts.repeats == 6  # five events, one alert revision
    assert (counts.created, counts.existing, counts.errors) == (RECENT + OLD + 2, 0, 0)
    assert "replay [##############################] 100%" in progress.getvalue()

    # The same documents, in the same daily indices, as the live path wrote.
    assert documents(client, events_prefix) == live
    assert documents(client, target.opensearch.alerts_index_prefix) == live_alerts
    # Events beyond the search retention in their own restore indices, under their own alias.
    restored = documents(client, restore)
    old = {e["event_id"]: e["occurred_at"] for e in events[RECENT:]}
    assert set(restored) == set(old)
    for event_id, (suffix, source) in restored.items():
        assert suffix == old[event_id].strftime("%Y.%m.%d")
        assert source["event"]["id"] == event_id
    assert client.indices.exists_index_template(name=restore)

    # Idempotent, through the command line: nothing new, nothing changed.
    env = {**os.environ, **to_env(target)}
    window = ["--from", (datetime.now(UTC) - timedelta(days=4)).isoformat()]
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "replay", *window],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"OpenSearch: 0 created, {RECENT + OLD + 2:,} already there" in proc.stdout
    assert "replay [" in proc.stderr
    assert documents(client, events_prefix) == live
    assert len(documents(client, restore)) == OLD
