"""Every event once: producer retries and conflicting copies, on the real stack."""

from __future__ import annotations

import time

from pipeline.codec import Decoder
from pipeline.producer import AuditProducer
from pipeline.schemas import DEAD_LETTER, ENRICHED_EVENT, default_store
from pipeline.settings import Settings
from tests.integration.processes import read_topic
from tests.integration.test_end_to_end import (
    _archived,
    _assert_contiguous,
    _count,
    _events,
    _indexed_ids,
    _settings,
    _start_pipeline,
    _wait_for,
)

N = 5000
CONFLICTS = 50


def _traffic(seed: int) -> tuple[list[dict], list[dict]]:
    events = _events(N, seed=seed)
    # Same id, same actor (so the same partition), different content: possible tampering.
    conflicts = [{**e, "action": "delete", "reason": "tampered"} for e in events[:CONFLICTS]]
    return events, conflicts


def _send(settings: Settings, batches: list[list[dict]], pause_after_first: float = 0.0) -> None:
    with AuditProducer(settings) as producer:
        for n, batch in enumerate(batches):
            for event in batch:
                producer.send(event)
            producer.flush()
            if n == 0 and pause_after_first:
                time.sleep(pause_after_first)


def _wait_until_all_landed(settings: Settings, procs: dict) -> None:
    _wait_for(
        lambda: (
            len(_archived(settings, settings.topics.input)) >= 2 * N + CONFLICTS
            and _count(settings) >= N
        ),
        "the archive and the index",
        list(procs.values()),
    )
    _wait_for(
        lambda: len(read_topic(settings, settings.topics.dead_letter, CONFLICTS, 5)) >= CONFLICTS,
        "the dead letters",
        list(procs.values()),
    )
    time.sleep(3)  # anything still in flight would now show up as an extra


def _check(settings: Settings, events: list[dict]) -> None:
    ids = [e["event_id"] for e in events]
    assert _count(settings) == N
    assert _indexed_ids(settings, ids) == set(ids)
    raw = _archived(settings, settings.topics.input)
    assert len(raw) == 2 * N + CONFLICTS  # the record of truth keeps every message
    _assert_contiguous(raw)
    decoder = Decoder(default_store(), default_store().latest(ENRICHED_EVENT))
    enriched = [
        decoder.decode(r["value"]).record for r in _archived(settings, settings.topics.enriched)
    ]
    assert {r["event"]["event_id"] for r in enriched} == set(ids)
    letters = read_topic(settings, settings.topics.dead_letter, expected=CONFLICTS, timeout=30)
    letters += read_topic(settings, settings.topics.dead_letter, expected=10**9, timeout=2)[
        len(letters) :
    ]
    dl_decoder = Decoder(default_store(), default_store().latest(DEAD_LETTER))
    records = [dl_decoder.decode(m.value()).record for m in letters]
    # A crash may repeat a dead letter; each conflicting source offset is there, and only those.
    assert {r["reason"] for r in records} == {"conflicting_duplicate"}
    assert len({(r["source_partition"], r["source_offset"]) for r in records}) == CONFLICTS
    assert {r["event_id"] for r in records} == set(ids[:CONFLICTS])


def test_each_event_twice_plus_conflicting_copies_gives_each_event_once(
    pipeline_settings, tmp_path
):
    settings = _settings(pipeline_settings)
    events, conflicts = _traffic(seed=21)
    procs = _start_pipeline(settings, tmp_path)
    try:
        _send(settings, [events, events, conflicts])
        _wait_until_all_landed(settings, procs)
    finally:
        for proc in procs.values():
            proc.stop()
    _check(settings, events)


def test_a_sigkilled_worker_restarts_from_its_changelog_and_still_counts_each_event_once(
    pipeline_settings, tmp_path
):
    settings = _settings(pipeline_settings)
    events, conflicts = _traffic(seed=22)
    procs = _start_pipeline(settings, tmp_path)
    try:
        _send(settings, [events])
        _wait_for(lambda: _count(settings) >= N // 2, "half the documents", list(procs.values()))
        procs["worker"].kill()
        # The worker's local state goes with it: recovery must come from the changelog.
        import shutil

        shutil.rmtree(settings.worker.data_dir, ignore_errors=True)
        _send(settings, [events, conflicts])
        procs["worker"].start()
        _wait_until_all_landed(settings, procs)
    finally:
        for proc in procs.values():
            proc.stop()
    _check(settings, events)
