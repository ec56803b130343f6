"""Reconcile's accounting: every raw offset indexed, dead-lettered or a duplicate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.integrity.reconcile import RawFact, classify

NOW = datetime(2026, 6, 1, tzinfo=UTC)
RECENT = NOW - timedelta(days=1)
OLD = NOW - timedelta(days=200)
HORIZON = NOW - timedelta(days=90)


def fact(
    offset: int, event_id: str | None, digest: str | None = None, when: datetime = RECENT
) -> RawFact:
    return RawFact(
        partition=0,
        offset=offset,
        timestamp_ms=offset,
        event_id=event_id,
        content_hash=digest or (f"h-{event_id}" if event_id else None),
        occurred_at=when if event_id else None,
        error=None if event_id else "undecodable: garbage",
    )


def lookup(docs: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda ids: {i: docs[i] for i in ids if i in docs}


def test_every_raw_offset_accounted_for_is_clean() -> None:
    raw = [
        fact(0, "a"),
        fact(1, None),  # garbage, dead-lettered
        fact(2, "a"),  # same content again: a duplicate
        fact(3, "b", when=OLD),  # beyond search retention: in the enriched archive
        fact(4, "c"),
    ]
    report = classify(
        raw,
        dead_letters={(0, 1)},
        indexed_hashes=lookup({"a": "h-a", "c": "h-c"}),
        enriched={(0, 3): "h-b"},
        search_horizon=HORIZON,
        documents_in_window=["a", "c"],
    )
    assert report.ok, report.findings
    assert (report.raw, report.indexed, report.dead_lettered, report.duplicates) == (5, 2, 1, 1)
    assert report.archived_only == 1
    assert report.summary().endswith("0 unaccounted")


def test_each_unaccounted_record_and_orphan_document_is_named() -> None:
    raw = [
        fact(0, "a"),  # not indexed
        fact(1, None),  # garbage, no dead letter
        fact(2, "b"),  # indexed with another hash
        fact(3, "c", when=OLD),  # old, and not in the enriched archive either
    ]
    report = classify(
        raw,
        dead_letters=set(),
        indexed_hashes=lookup({"b": "other"}),
        enriched={},
        search_horizon=HORIZON,
        documents_in_window=["b", "ghost"],
        topic="access-events",
    )
    found = {(f.kind, f.where) for f in report.findings}
    assert found == {
        ("not_indexed", "access-events[0]@0"),
        ("not_dead_lettered", "access-events[0]@1"),
        ("hash_mismatch", "access-events[0]@2"),
        ("not_indexed", "access-events[0]@3"),
        ("no_raw_source", "ghost"),
    }
    assert not report.ok
