"""The whole path on the real stack: producer → Kafka → worker → OpenSearch and the archive."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from pipeline.codec import Decoder
from pipeline.producer import AuditProducer
from pipeline.schemas import ENRICHED_EVENT, default_store
from pipeline.settings import Settings
from pipeline.simulate import Simulator
from pipeline.sinks.archive import read_records
from tests.integration.processes import PipelineProcess

N = 10_000


def _settings(pipeline_settings: Settings) -> Settings:
    """Short session timeouts, so a killed member's partitions move on quickly."""
    suffix = pipeline_settings.topics.input.removeprefix("access-events")
    return pipeline_settings.model_copy(
        update={
            "worker": pipeline_settings.worker.model_copy(update={"session_timeout_s": 6.0}),
            "opensearch": pipeline_settings.opensearch.model_copy(
                update={"events_index_prefix": f"audit-events{suffix}".lower()}
            ),
        }
    )


def _events(count: int, seed: int) -> list[dict]:
    now = datetime.now(tz=UTC)
    return [e for _, e in Simulator(seed).events(count=count, rate=1e6, start=now, speed=1)]


def _produce(settings: Settings, events: list[dict], rate: float | None = None) -> None:
    began = time.monotonic()
    with AuditProducer(settings) as producer:
        for n, event in enumerate(events):
            if rate is not None:
                delay = began + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.send(event)


def _client(settings: Settings) -> OpenSearch:
    return OpenSearch(settings.opensearch.url, timeout=60)


def _count(settings: Settings) -> int:
    client = _client(settings)
    alias = settings.opensearch.events_index_prefix
    if not client.indices.exists_alias(name=alias):
        return 0
    client.indices.refresh(index=alias)
    return int(client.count(index=alias)["count"])


def _wait_for(predicate, what: str, procs: list[PipelineProcess], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.running(), f"{proc.log_path.name} died:\n{proc.log_tail()}"
        if predicate():
            return
        time.sleep(1)
    logs = "\n".join(f"--- {p.log_path.name}\n{p.log_tail(15)}" for p in procs)
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def _indexed_ids(settings: Settings, ids: list[str]) -> set[str]:
    client = _client(settings)
    found: set[str] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        result = client.search(
            index=settings.opensearch.events_index_prefix,
            body={"size": len(chunk), "_source": False, "query": {"ids": {"values": chunk}}},
        )
        found.update(hit["_id"] for hit in result["hits"]["hits"])
    return found


def _archived(settings: Settings, topic: str) -> list[dict]:
    root = Path(settings.archive.path) / topic
    records: list[dict] = []
    for path in sorted(root.glob("*/*.avro")):
        records.extend(read_records(path.read_bytes()))
    return records


def _start_pipeline(settings: Settings, log_dir: Path) -> dict[str, PipelineProcess]:
    return {
        "worker": PipelineProcess(settings, "worker", log_dir=log_dir, name="worker").start(),
        "opensearch": PipelineProcess(
            settings, "sink", "opensearch", log_dir=log_dir, name="sink-opensearch"
        ).start(),
        "archive": PipelineProcess(
            settings, "sink", "archive", log_dir=log_dir, name="sink-archive"
        ).start(),
    }


def _assert_contiguous(raw: list[dict]) -> None:
    """Each partition's archived offsets run without a gap or a repeat."""
    for partition in {r["partition"] for r in raw}:
        offsets = sorted(r["offset"] for r in raw if r["partition"] == partition)
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))


def _assert_exactly_once(settings: Settings, events: list[dict]) -> None:
    ids = [e["event_id"] for e in events]
    assert _count(settings) == len(events)
    assert _indexed_ids(settings, ids) == set(ids)
    raw = _archived(settings, settings.topics.input)
    assert len(raw) == len(events)
    _assert_contiguous(raw)
    decoder = Decoder(default_store(), default_store().latest(ENRICHED_EVENT))
    enriched = [
        decoder.decode(r["value"]).record for r in _archived(settings, settings.topics.enriched)
    ]
    # At-least-once may repeat an enriched record after a crash; readers take the first per id.
    assert {r["event"]["event_id"] for r in enriched} == set(ids)


def test_simulated_events_land_exactly_once_in_opensearch_and_both_archives(
    pipeline_settings, tmp_path
):
    settings = _settings(pipeline_settings)
    events = _events(N, seed=11)
    procs = _start_pipeline(settings, tmp_path)
    try:
        _produce(settings, events)
        _wait_for(lambda: _count(settings) >= N, f"{N} documents", list(procs.values()))
        _wait_for(
            lambda: (
                len(_archived(settings, settings.topics.input)) >= N
                and len(_archived(settings, settings.topics.enriched)) >= N
            ),
            "the archive",
            list(procs.values()),
        )
    finally:
        for proc in procs.values():
            proc.stop()
    _assert_exactly_once(settings, events)
    assert len(_archived(settings, settings.topics.enriched)) == N  # no crash: no repeat


def test_sigkill_of_the_worker_then_the_opensearch_sink_loses_and_duplicates_nothing(
    pipeline_settings, tmp_path
):
    settings = _settings(pipeline_settings)
    events = _events(N, seed=12)
    procs = _start_pipeline(settings, tmp_path)
    producer = threading.Thread(target=_produce, args=(settings, events, 1000.0))
    producer.start()
    try:
        _wait_for(lambda: _count(settings) >= 1500, "the first documents", list(procs.values()))
        procs["worker"].kill()
        procs["worker"].start()
        _wait_for(
            lambda: _count(settings) >= 5000,
            "documents after the worker restart",
            list(procs.values()),
        )
        procs["opensearch"].kill()
        procs["opensearch"].start()
        producer.join(60)
        _wait_for(lambda: _count(settings) >= N, f"all {N} documents", list(procs.values()))
        _wait_for(
            lambda: len(_archived(settings, settings.topics.input)) >= N,
            "the raw archive",
            list(procs.values()),
        )
        time.sleep(3)  # anything still in flight would now show up as an extra document
    finally:
        producer.join(60)
        for proc in procs.values():
            proc.stop()
    _assert_exactly_once(settings, events)
