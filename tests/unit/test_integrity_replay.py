"""Replay's planning, batching and progress, without OpenSearch."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.errors import TransportError
from pipeline.integrity import replay as replay_module
from pipeline.integrity.replay import (
    MAX_ATTEMPTS,
    Planned,
    Progress,
    ReplayCounts,
    Writer,
    plan,
    restore_prefix,
    to_record,
)
from pipeline.schemas import default_store
from pipeline.settings import OpenSearchSettings
from pipeline.sinks.archive import to_raw
from pipeline.sinks.base import Batch, Record
from tests.unit.test_sink_opensearch import ALERTS, EVENTS, alert, enriched

NOW = datetime(2025, 3, 2, tzinfo=UTC)
HORIZON = NOW - timedelta(days=90)
RECENT = datetime(2025, 3, 1, 12, tzinfo=UTC)
OLD = datetime(2024, 6, 1, 12, tzinfo=UTC)


def archived(offset: int, value: bytes, topic: str = EVENTS) -> dict[str, Any]:
    """A record as the archive stores it."""
    return to_raw(Record(topic, 0, offset, 2, 1_740_873_600_000 + offset, b"k", value))


def planned(records: list[dict[str, Any]], **window: Any) -> tuple[list[Planned], ReplayCounts]:
    counts = ReplayCounts()
    items = list(
        plan(
            records,
            default_store(),
            OpenSearchSettings(events_index_prefix="audit-events"),
            events_topic=EVENTS,
            restore="audit-restore",
            start=window.get("start"),
            end=window.get("end"),
            horizon=HORIZON,
            counts=counts,
        )
    )
    return items, counts


def test_restore_prefix_follows_the_events_prefix() -> None:
    assert restore_prefix("audit-events") == "audit-restore"
    assert restore_prefix("it-1234-events") == "it-1234-restore"
    assert restore_prefix("logs") == "logs-restore"


def test_archived_records_become_the_sinks_records_unchanged() -> None:
    original = Record(EVENTS, 3, 42, 2, 1_700_000_000_000, b"key", b"value", (("h", b"v"),))
    assert to_record(to_raw(original)) == original


def test_the_first_record_per_event_id_is_replayed_into_the_index_of_its_day() -> None:
    records = [
        archived(0, enriched("e-1", occurred=RECENT)),
        archived(1, enriched("e-2", occurred=RECENT)),
        archived(2, enriched("e-1", occurred=RECENT)),  # at-least-once repeat
    ]
    items, counts = planned(records)
    assert [(i.id, i.target, i.index, i.record.offset) for i in items] == [
        ("e-1", "events", "audit-events-2025.03.01", 0),
        ("e-2", "events", "audit-events-2025.03.01", 1),
    ]
    assert (counts.read, counts.events, counts.repeats) == (3, 2, 1)
    assert counts.indices == {"audit-events-2025.03.01": 2}


def test_events_older_than_the_search_retention_go_to_the_restore_indices() -> None:
    items, counts = planned(
        [archived(0, enriched("old", occurred=OLD)), archived(1, enriched("new", occurred=RECENT))]
    )
    assert [(i.id, i.target, i.index) for i in items] == [
        ("old", "restore", "audit-restore-2024.06.01"),
        ("new", "events", "audit-events-2025.03.01"),
    ]
    assert (counts.restored, counts.events) == (1, 1)


def test_the_window_is_the_events_own_time() -> None:
    records = [
        archived(0, enriched("before", occurred=RECENT - timedelta(days=1))),
        archived(1, enriched("inside", occurred=RECENT)),
        archived(2, enriched("after", occurred=RECENT + timedelta(hours=1))),
    ]
    items, counts = planned(records, start=RECENT - timedelta(hours=1), end=RECENT)
    assert [i.id for i in items] == ["inside"]
    assert counts.outside == 2


def test_alerts_are_replayed_once_per_revision_and_undecodable_records_are_counted() -> None:
    records = [
        archived(0, alert(1), ALERTS),
        archived(1, alert(2), ALERTS),
        archived(2, alert(2), ALERTS),  # a repeat
        archived(3, enriched("e-1")[:30]),  # a known schema, a broken body
    ]
    items, counts = planned(records)
    assert [(i.id, i.target, i.index) for i in items] == [
        ("a-1", "alerts", "audit-alerts-2025.02"),
        ("a-1", "alerts", "audit-alerts-2025.02"),
    ]
    assert (counts.alerts, counts.repeats, counts.undecodable) == (2, 1, 1)


class FlakySink:
    """Refuses the first ``failures`` writes, then settles everything."""

    stage = "sink_opensearch"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[list[int]] = []

    def write(self, batch: Batch) -> None:
        if self.failures:
            self.failures -= 1
            raise TransportError("OpenSearch refused 1 of 1 documents (429)")
        self.batches.append([r.offset for r in batch.pending()])
        batch.settle(batch.pending())


def item(offset: int, target: str = "events") -> Planned:
    return Planned(Record(EVENTS, 0, offset, 2, 0, None, b""), target, "i", str(offset))  # type: ignore[arg-type]


def test_the_writer_batches_per_target_and_retries_refused_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replay_module.time, "sleep", lambda s: None)
    live, restore = FlakySink(failures=2), FlakySink(failures=0)
    writer = Writer({"events": live, "restore": restore}, batch_size=2, retry=(0.1, 1.0))
    for offset in range(5):
        writer.add(item(offset, "restore" if offset == 2 else "events"))
    writer.flush()
    assert live.batches == [[0, 1], [3, 4]]
    assert restore.batches == [[2]]


def test_the_writer_gives_up_after_its_attempts_and_says_replay_can_run_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replay_module.time, "sleep", lambda s: None)
    writer = Writer({"events": FlakySink(failures=MAX_ATTEMPTS)}, batch_size=1, retry=(0.1, 1.0))
    with pytest.raises(TransportError, match="run it again"):
        writer.add(item(0))


def test_progress_is_a_line_every_few_seconds_when_not_on_a_terminal() -> None:
    clock = iter([0.0, 1.0, 6.0, 7.0, 8.0, 9.0])
    out = io.StringIO()
    bar = Progress(200, "replay", out, clock=lambda: next(clock))
    bar.update(50)  # too soon: nothing
    bar.update(100)  # 6 s in
    bar.update(150)  # too soon
    bar.update(200)
    bar.finish()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("replay [###############...............]  50% 100/200 records")
    assert lines[-1].startswith("replay [##############################] 100% 200/200 records")
    assert len(lines) == 2
