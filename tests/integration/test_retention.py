"""``auditstream retention apply`` against the real OpenSearch, Kafka and a real archive store."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from pipeline import ecs
from pipeline.integrity.replay import install_restore_template, restore_prefix
from pipeline.retention import run_apply
from pipeline.settings import Settings
from pipeline.sinks.archive import encode_object
from pipeline.sinks.base import Record
from pipeline.sinks.opensearch import make_client
from pipeline.sinks.storage import open_store
from tests.integration.search_docs import alert_doc, event_doc, index_docs, utc, with_prefixes

NOW = utc(2025, 6, 15, 12)  # events cutoff 2025-03-17T12:00, alerts cutoff 2024-05-11T12:00


def _archive_raw(settings: Settings, partition: int, last_offset: int) -> None:
    store = open_store(settings.archive)
    records = [
        Record(settings.topics.input, partition, o, 2, 1_740_000_000_000 + o, b"k", b"v")
        for o in range(last_offset + 1)
    ]
    data, info = encode_object(records, 0)
    assert store.put_if_absent(info.key, data)


def test_retention_deletes_exactly_the_expired_archived_indices(
    pipeline_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = with_prefixes(pipeline_settings)
    ev = settings.opensearch.events_index_prefix
    al = settings.opensearch.alerts_index_prefix
    docs = []
    # expired, archived (partition 0 offsets 0-4, partition 1 offsets 0-4)
    for o in range(5):
        docs.append(event_doc(settings, occurred_at=utc(2025, 3, 1, 8, o), partition=0, offset=o))
        docs.append(
            event_doc(settings, occurred_at=utc(2025, 3, 10, 23, 59), partition=1, offset=o)
        )
    # expired, but partition 2's archive stops at offset 5: refused
    for o in (10, 11, 12):
        docs.append(event_doc(settings, occurred_at=utc(2025, 3, 12, 1), partition=2, offset=o))
    # expired by name, but holding a (misplaced) in-window document: kept
    _, doc_id, misplaced = event_doc(settings, occurred_at=utc(2025, 4, 1), partition=0, offset=1)
    docs.append((f"{ev}-2025.03.14", doc_id, misplaced))
    # the day holding the cutoff: its first half is expired, its second is not: kept
    docs.append(event_doc(settings, occurred_at=utc(2025, 3, 17, 0, 5), partition=0, offset=2))
    docs.append(event_doc(settings, occurred_at=utc(2025, 6, 10), partition=0, offset=3))
    # not exactly <prefix>-<date>: never touched
    _, other_id, other = event_doc(settings, occurred_at=utc(2025, 1, 1), partition=0, offset=4)
    docs.append((f"{ev}-old-2025.01.01", other_id, other))
    # alerts: March 2024 ends before the cutoff; May 2024 holds it
    docs.append(alert_doc(settings, first_seen=utc(2024, 3, 20)))
    docs.append(alert_doc(settings, first_seen=utc(2024, 5, 2)))
    client = index_docs(settings, docs)
    _archive_raw(settings, 0, 4)
    _archive_raw(settings, 1, 4)
    _archive_raw(settings, 2, 5)

    def indices() -> set[str]:
        found = client.indices.get(index=f"{ev}-*,{al}-*")
        return set(found)

    before = indices()
    assert before == {
        f"{ev}-2025.03.01",
        f"{ev}-2025.03.10",
        f"{ev}-2025.03.12",
        f"{ev}-2025.03.14",
        f"{ev}-2025.03.17",
        f"{ev}-2025.06.10",
        f"{ev}-old-2025.01.01",
        f"{al}-2024.03",
        f"{al}-2024.05",
    }
    expired = {f"{ev}-2025.03.01", f"{ev}-2025.03.10", f"{al}-2024.03"}

    args = argparse.Namespace(dry_run=True, ism=False, now=NOW)
    assert run_apply(args, settings) == 1  # a refusal is a failure
    out = capsys.readouterr().out
    assert indices() == before  # a dry run changes nothing
    for name in expired:
        assert f"would delete {name} " in out
    assert f"REFUSED delete of {ev}-2025.03.12" in out
    assert "needs offset 12, archive holds up to offset 5" in out
    assert f"keep {ev}-2025.03.14" in out and "holds a document from 2025-04-01" in out
    assert f"keep {ev}-2025.03.17" in out
    assert "-old-" not in out

    assert run_apply(argparse.Namespace(dry_run=False, ism=False, now=NOW), settings) == 1
    out = capsys.readouterr().out
    assert indices() == before - expired
    for name in expired:
        assert f"deleted {name} " in out
    assert "3 deleted, 1 refused" in out

    # once partition 2 is archived through offset 12, the refused index goes too
    store = open_store(settings.archive)
    records = [
        Record(settings.topics.input, 2, o, 2, 1_740_000_000_000 + o, b"k", b"v")
        for o in range(6, 13)
    ]
    data, info = encode_object(records, 6)
    assert store.put_if_absent(info.key, data)
    later = NOW + timedelta(hours=1)
    assert run_apply(argparse.Namespace(dry_run=False, ism=False, now=later), settings) == 0
    assert indices() == before - expired - {f"{ev}-2025.03.12"}


def test_restore_indices_are_deleted_a_window_after_their_last_restore(
    pipeline_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay``'s old events live ``retention.restore_days`` (default 30) after the restore."""
    settings = with_prefixes(pipeline_settings)
    assert settings.retention.restore_days == 30
    restore = restore_prefix(settings.opensearch.events_index_prefix)
    client = make_client(settings.opensearch)
    install_restore_template(client, settings.opensearch, restore)
    now = datetime.now(UTC) + timedelta(days=100)  # the indices were created 100 days ago
    restored = {  # index: (partition, restored days before now)
        f"{restore}-2024.01.05": (0, 40),  # restored 40 days ago: deleted
        f"{restore}-2024.01.06": (1, 10),  # restored 10 days ago: kept
        f"{restore}-2024.01.07": (2, 40),  # expired, but the raw archive stops short: refused
    }
    body = []
    for index, (partition, days) in restored.items():
        occurred = datetime.strptime(index[-10:], "%Y.%m.%d").replace(tzinfo=UTC)
        for offset in range(3):
            _, doc_id, doc = event_doc(
                settings, occurred_at=occurred, partition=partition, offset=10 + offset
            )
            doc["event"]["ingested"] = ecs.iso(now - timedelta(days=days, minutes=offset))
            body += [{"create": {"_index": index, "_id": doc_id}}, doc]
    assert not client.bulk(body=body, refresh=True)["errors"]
    _archive_raw(settings, 0, 12)
    _archive_raw(settings, 1, 12)
    _archive_raw(settings, 2, 11)

    def indices() -> set[str]:
        return set(client.indices.get(index=f"{restore}-*"))

    args = argparse.Namespace(dry_run=False, ism=False, archive=False, now=datetime.now(UTC))
    assert run_apply(args, settings) == 0  # just created: kept, whatever their dates
    out = capsys.readouterr().out
    assert indices() == set(restored)
    assert out.count("window 30 d from the restore") == 3

    args = argparse.Namespace(dry_run=True, ism=False, archive=False, now=now)
    assert run_apply(args, settings) == 1
    assert indices() == set(restored)
    out = capsys.readouterr().out
    assert f"would delete {restore}-2024.01.05 (restore " in out
    assert f"keep {restore}-2024.01.06" in out and "a document was restored" in out
    assert f"REFUSED delete of {restore}-2024.01.07" in out
    assert "needs offset 12, archive holds up to offset 11" in out

    args = argparse.Namespace(dry_run=False, ism=False, archive=False, now=now)
    assert run_apply(args, settings) == 1
    assert indices() == set(restored) - {f"{restore}-2024.01.05"}
    assert f"deleted {restore}-2024.01.05 " in capsys.readouterr().out
