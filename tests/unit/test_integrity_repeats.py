"""``verify`` counts repeats in the derived chains as information; the raw chain has none."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.codec import Encoding, encode
from pipeline.integrity import keys
from pipeline.integrity.digest import DigestSigner
from pipeline.integrity.repeats import DerivedKind, derived_topics
from pipeline.integrity.verify import TrustedKeys, VerifyReport, verify_archive
from pipeline.schemas import DEAD_LETTER, default_store
from pipeline.settings import TopicSettings
from pipeline.sinks.archive import ArchiveSink, read_records
from pipeline.sinks.base import Batch, Record
from pipeline.sinks.storage import FilesystemStore
from tests.unit.test_integrity_verify import run_cli
from tests.unit.test_sink_opensearch import alert, enriched

TOPICS = TopicSettings()
RAW, ENRICHED, ALERTS, DLQ = TOPICS.input, TOPICS.enriched, TOPICS.alerts, TOPICS.dead_letter
NOW = datetime.now(UTC).replace(microsecond=0)


def dead_letter(partition: int, offset: int, reason: str = "undecodable") -> bytes:
    record = {
        "reason": reason,
        "detail": "not Avro",
        "event_id": None,
        "source_topic": RAW,
        "source_partition": partition,
        "source_offset": offset,
        "source_timestamp": None,
        "original_key": None,
        "original_value": b"garbage",
        "original_headers": [],
        "dead_lettered_at": NOW,
    }
    return encode(record, default_store().latest(DEAD_LETTER), Encoding.SINGLE_OBJECT)


class Archive:
    """An archive written through the real sink, signed, verified with the derived topics."""

    def __init__(self, root: Path) -> None:
        self.store = FilesystemStore(root)
        self.sink = ArchiveSink(self.store)
        self.key = Ed25519PrivateKey.generate()
        self.next: dict[tuple[str, int], int] = {}

    def write(self, topic: str, values: list[bytes | None], partition: int = 0) -> None:
        """One batch: ``values`` at the partition's next offsets."""
        tp = (topic, partition)
        if tp not in self.next:
            self.sink.open([tp])
        start = self.next.get(tp, 0)
        records = [
            Record(topic, partition, start + i, 2, int(NOW.timestamp() * 1000) + i, b"k", v)
            for i, v in enumerate(values)
        ]
        self.next[tp] = start + len(values)
        batch = Batch(records=records, attempts=1)
        self.sink.write(batch)

    def verify(self, derived: dict[str, DerivedKind] | None = None) -> VerifyReport:
        DigestSigner(self.store, self.key, 3600).sign(NOW)
        trusted = TrustedKeys(public_keys=[self.key.public_key()])
        return verify_archive(
            self.store,
            trusted,
            now=NOW,
            derived=derived_topics(TOPICS) if derived is None else derived,
        )


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "archive")


def test_the_derived_topics_are_enriched_alerts_and_dead_letters_never_the_input() -> None:
    assert derived_topics(TOPICS) == {ENRICHED: "enriched", ALERTS: "alerts", DLQ: "dead_letters"}
    assert RAW not in derived_topics(TOPICS)


def test_a_repeated_enriched_event_verifies_clean_and_is_counted(archive: Archive) -> None:
    archive.write(ENRICHED, [enriched("e-1"), enriched("e-2")])
    archive.write(ENRICHED, [enriched("e-2"), enriched("e-3")])  # e-2 again, after a crash
    archive.write(ENRICHED, [enriched("e-1")], partition=1)  # a repeat in another partition
    report = archive.verify()
    assert report.ok, report.text()
    assert report.repeats.repeats[ENRICHED] == 2
    assert report.summary() == (
        "1/1 digests valid, 3/3 objects valid, 0 gaps; 2 repeated derived record(s), not a problem"
    )
    assert f"info: {ENRICHED}: 2 repeated record(s) (same event_id" in report.text()
    assert report.text().endswith("OK")
    js = json.loads(json.dumps(report.to_json()))
    assert js["ok"] is True
    assert js["repeats"][ENRICHED] == {
        "kind": "enriched",
        "identity": "event_id",
        "records": 5,
        "repeats": 2,
        "unreadable": 0,
    }
    assert js["repeats"][ALERTS]["repeats"] == js["repeats"][DLQ]["repeats"] == 0


def test_ids_are_remembered_for_a_bounded_window_of_records(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.integrity import repeats

    monkeypatch.setattr(repeats, "WINDOW", 2)
    archive.write(ENRICHED, [enriched("e-1"), enriched("e-2"), enriched("e-2")])  # counted
    archive.write(ENRICHED, [enriched("e-3"), enriched("e-1")])  # e-1 left the window
    report = archive.verify()
    assert report.ok, report.text()
    assert report.repeats.repeats[ENRICHED] == 1


def test_an_alert_repeats_only_with_the_same_revision(archive: Archive) -> None:
    archive.write(ALERTS, [alert(1), alert(2)])  # a new revision is not a repeat
    archive.write(ALERTS, [alert(2), alert(3)])  # revision 2 emitted again is
    report = archive.verify()
    assert report.ok, report.text()
    assert (report.repeats.records[ALERTS], report.repeats.repeats[ALERTS]) == (4, 1)
    assert "same alert_id and revision" in report.text()


def test_a_dead_letter_repeats_when_it_names_the_same_source_offset(archive: Archive) -> None:
    # Two different reasons for one source offset are still one source record dead-lettered twice.
    archive.write(DLQ, [dead_letter(0, 5), dead_letter(0, 6), dead_letter(1, 5)])
    archive.write(DLQ, [dead_letter(0, 5, reason="invalid_field")])
    report = archive.verify()
    assert report.ok, report.text()
    assert report.repeats.repeats[DLQ] == 1
    assert "same source partition and offset" in report.text()


def test_undecodable_derived_records_are_information_too(archive: Archive) -> None:
    archive.write(ENRICHED, [enriched("e-1"), b"not an event", None])
    report = archive.verify()
    assert report.ok, report.text()
    assert (report.repeats.repeats[ENRICHED], report.repeats.unreadable[ENRICHED]) == (0, 2)
    assert report.summary() == "1/1 digests valid, 1/1 objects valid, 0 gaps"
    assert f"{ENRICHED}: 2 record(s) that do not decode" in report.text()


def test_without_derived_topics_nothing_is_decoded_or_counted(archive: Archive) -> None:
    archive.write(ENRICHED, [enriched("e-1"), enriched("e-1")])
    report = archive.verify(derived={})
    assert report.ok and report.repeats.total == 0
    assert report.to_json()["repeats"] == {}


def test_the_raw_chain_holds_each_offset_once_so_it_has_no_repeats(archive: Archive) -> None:
    same = enriched("e-1")  # any bytes: the raw archive never decodes them
    archive.write(RAW, [same, same, b"other"])  # a producer's duplicate: two offsets
    # The same offsets delivered again (a sink restarted before its commit) are not written.
    records = [Record(RAW, 0, o, 2, int(NOW.timestamp() * 1000), b"k", same) for o in (1, 2)]
    archive.sink.write(Batch(records=records, attempts=1))
    archive.write(RAW, [b"later"])
    offsets = [
        r["offset"]
        for key in archive.store.list(f"{RAW}/")
        for r in read_records(archive.store.get(key))
    ]
    assert offsets == [0, 1, 2, 3]  # contiguous, each once
    report = archive.verify()
    assert report.ok, report.text()
    assert report.records == 4 and report.repeats.total == 0
    assert RAW not in report.to_json()["repeats"]


def test_the_verify_command_counts_repeats_in_the_topics_the_settings_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = Archive(tmp_path / "archive")
    topic = "my-enriched"
    archive.write(topic, [enriched("e-1"), enriched("e-1")])
    DigestSigner(archive.store, archive.key, 3600).sign()
    fingerprint = keys.fingerprint(archive.key.public_key())
    monkeypatch.setenv("AUDITSTREAM_ARCHIVE__PATH", str(archive.store.root))
    monkeypatch.setenv("AUDITSTREAM_TOPICS__ENRICHED", topic)
    assert run_cli(["verify", "--fingerprint", fingerprint, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["repeats"][topic]["repeats"] == 1
    assert report["summary"].endswith("; 1 repeated derived record(s), not a problem")
