"""Digests and the tamper suite: each manipulation is named; a clean archive verifies clean."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.errors import ConfigError
from pipeline.integrity import commands, keys
from pipeline.integrity.chain import entry_key
from pipeline.integrity.digest import DigestSigner, list_digests
from pipeline.integrity.verify import TrustedKeys, VerifyReport, verify_archive
from pipeline.settings import load_settings
from pipeline.sinks.archive import ArchiveSink, encode_object, object_key
from pipeline.sinks.base import Batch, Record
from pipeline.sinks.storage import FilesystemStore

T = "access-events"
D = "access-events-enriched"
T0 = (datetime.now(UTC) - timedelta(hours=2, minutes=30)).replace(microsecond=0)
HOUR = timedelta(hours=1)


def rec(offset: int, partition: int = 0, topic: str = T, value: bytes | None = None) -> Record:
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_type=2,
        timestamp=int(T0.timestamp() * 1000) + offset,
        key=b"actor",
        value=value if value is not None else b"value-%d" % offset,
    )


def write(sink: ArchiveSink, offsets: range, partition: int = 0, topic: str = T) -> None:
    batch = Batch(records=[rec(o, partition, topic) for o in offsets])
    batch.attempts = 1
    sink.write(batch)


class Archive:
    """A small archive: 2 topics, 3 partitions, 3 digests an hour apart."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = FilesystemStore(root)
        self.key = Ed25519PrivateKey.generate()
        self.signer = DigestSigner(self.store, self.key, 3600)
        self.sink = ArchiveSink(self.store)
        self.sink.open([(T, 0), (T, 1), (D, 0)])
        for start in range(0, 40, 10):
            write(self.sink, range(start, start + 10), 0)
            write(self.sink, range(start, start + 5), 1)
        write(self.sink, range(0, 7), 0, D)
        self.signer.sign(T0)
        write(self.sink, range(40, 50), 0)
        self.signer.sign(T0 + HOUR)
        write(self.sink, range(50, 60), 0)
        self.signer.sign(T0 + 2 * HOUR)

    def trusted(self) -> TrustedKeys:
        return TrustedKeys(public_keys=[self.key.public_key()])

    def verify(self, trusted: TrustedKeys | None = None) -> VerifyReport:
        return verify_archive(self.store, trusted or self.trusted(), now=T0 + 2 * HOUR)

    def path(self, key: str) -> Path:
        path = self.root / key
        path.chmod(0o644)
        return path

    def rewrite(self, key: str, change: Callable[[bytes], bytes]) -> None:
        path = self.path(key)
        path.write_bytes(change(path.read_bytes()))

    def delete(self, key: str) -> None:
        self.path(key).unlink()


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "archive")


def test_a_clean_archive_verifies_clean(archive: Archive) -> None:
    report = archive.verify()
    assert report.ok, report.text()
    # partition 0: 6 objects, partition 1: 4, enriched: 1
    assert report.summary() == "3/3 digests valid, 11/11 objects valid, 0 gaps"
    assert report.records == 60 + 20 + 7
    assert report.uncovered_objects == 0
    js = report.to_json()
    assert js["ok"] is True and js["objects"] == {
        "total": 11,
        "valid": 11,
        "bytes_checked": report.bytes_checked,
        "uncovered": 0,
        "pending": [],
    }


def test_digests_chain_to_the_previous_signature(archive: Archive) -> None:
    first, second, third = (json.loads(archive.store.get(k)) for k in list_digests(archive.store))
    assert first["body"]["previous_signature"] is None
    assert second["body"]["previous_signature"] == first["signature"]
    assert third["body"]["previous_digest"] == list_digests(archive.store)[1]
    assert third["body"]["key_id"] == keys.key_id(archive.key.public_key())
    heads = {(h["topic"], h["partition"]): h["last_offset"] for h in third["body"]["heads"]}
    assert heads == {(T, 0): 59, (T, 1): 34, (D, 0): 6}


def test_a_modified_object_is_named(archive: Archive) -> None:
    key = object_key(T, 0, 10)
    archive.rewrite(key, lambda b: b[:-20] + bytes(20))
    report = archive.verify()
    assert report.kinds() == {"modified_object"}
    assert report.problems[0].key == key
    assert report.summary() == "3/3 digests valid, 10/11 objects valid, 0 gaps"


def test_a_replaced_object_with_its_entry_rewritten_breaks_the_chain(archive: Archive) -> None:
    forged, _info = encode_object([rec(o, 0, value=b"forged") for o in range(10, 20)], 10)
    archive.rewrite(object_key(T, 0, 10), lambda _: forged)
    old = json.loads(archive.store.get(entry_key(T, 0, 10)))
    old["sha256"] = hashlib.sha256(forged).hexdigest()
    old["size"] = len(forged)
    archive.rewrite(entry_key(T, 0, 10), lambda _: json.dumps(old).encode())
    report = archive.verify()
    assert "altered_entry" in report.kinds()
    assert any(p.key == entry_key(T, 0, 20) for p in report.problems)  # the next link breaks


def test_a_deleted_object_is_named(archive: Archive) -> None:
    archive.delete(object_key(T, 1, 5))
    report = archive.verify()
    assert report.kinds() == {"deleted_object"}
    assert report.problems[0].key == object_key(T, 1, 5)


def test_a_deleted_object_and_its_entry_leave_a_named_gap(archive: Archive) -> None:
    archive.delete(object_key(T, 0, 20))
    archive.delete(entry_key(T, 0, 20))
    report = archive.verify()
    assert report.kinds() == {"deleted_object"}
    assert "offsets 20-29" in report.problems[0].detail
    assert report.gaps == 1


def test_an_inserted_object_is_named(archive: Archive) -> None:
    forged, info = encode_object([rec(15, 0)], 15)
    archive.store.put_if_absent(info.key, forged)
    report = archive.verify()
    assert report.kinds() == {"inserted_object"}
    assert report.problems[0].key == info.key


def test_reordered_entries_are_named(archive: Archive) -> None:
    a, b = entry_key(T, 0, 10), entry_key(T, 0, 20)
    body_a, body_b = archive.store.get(a), archive.store.get(b)
    archive.rewrite(a, lambda _: body_b)
    archive.rewrite(b, lambda _: body_a)
    report = archive.verify()
    assert "reordered_entries" in report.kinds()
    assert {p.key for p in report.problems if p.kind == "reordered_entries"} == {a, b}


def test_deleting_the_newest_object_and_entry_is_caught_by_the_digest(archive: Archive) -> None:
    archive.delete(object_key(T, 0, 50))
    archive.delete(entry_key(T, 0, 50))
    report = archive.verify()
    assert report.kinds() == {"deleted_newest_object"}
    assert "up to offset 59" in report.problems[0].detail
    assert "now ends at 49" in report.problems[0].detail


def test_a_missing_digest_is_named(archive: Archive) -> None:
    middle = list_digests(archive.store)[1]
    archive.delete(middle)
    report = archive.verify()
    assert "missing_digest" in report.kinds()
    assert any(p.key == middle for p in report.problems)


def test_an_altered_digest_is_named(archive: Archive) -> None:
    key = list_digests(archive.store)[1]
    raw = json.loads(archive.store.get(key))
    raw["body"]["heads"][0]["last_offset"] = 1
    archive.rewrite(key, lambda _: json.dumps(raw).encode())
    report = archive.verify()
    assert "altered_digest" in report.kinds()
    assert report.summary().startswith("2/3 digests valid")


def test_a_wrong_key_is_named(archive: Archive) -> None:
    stranger = TrustedKeys(public_keys=[Ed25519PrivateKey.generate().public_key()])
    report = archive.verify(stranger)
    assert "wrong_key" in report.kinds()
    assert report.summary().startswith("0/3 digests valid")


def test_a_digest_signed_by_another_key_is_named(archive: Archive) -> None:
    DigestSigner(archive.store, Ed25519PrivateKey.generate(), 3600).sign(T0 + 2 * HOUR + HOUR / 2)
    report = archive.verify()
    assert report.kinds() == {"wrong_key"}


def test_a_fingerprint_is_enough_to_trust_a_key(archive: Archive) -> None:
    fp = keys.fingerprint(archive.key.public_key())
    assert archive.verify(TrustedKeys(fingerprints={fp})).ok


def test_objects_after_the_newest_digest_are_reported_as_uncovered(archive: Archive) -> None:
    write(archive.sink, range(60, 70), 0)
    report = archive.verify()
    assert report.ok and report.uncovered_objects == 1


def test_a_missing_scheduled_digest_is_named(archive: Archive) -> None:
    archive.signer.sign(T0 + 6 * HOUR)
    report = verify_archive(archive.store, archive.trusted(), now=T0 + 6 * HOUR)
    assert report.kinds() == {"missing_scheduled_digest"}
    late = verify_archive(archive.store, archive.trusted(), now=T0 + 9 * HOUR)
    assert len(late.problems) == 2


def test_an_object_written_but_not_yet_chained_is_pending_not_a_problem(archive: Archive) -> None:
    data, info = encode_object([rec(60, 0)], 60)
    archive.store.put_if_absent(info.key, data)
    report = archive.verify()
    assert report.ok and report.pending_objects == [info.key]


# -- the command line -------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    """What ``auditstream`` does for these subcommands (only this package's parsers)."""
    parser = argparse.ArgumentParser(prog="auditstream")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args, load_settings())
    except ConfigError:
        return 2
    return status


def test_keygen_verify_and_json_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "archive"
    monkeypatch.setenv("AUDITSTREAM_ARCHIVE__PATH", str(root))
    key_path = tmp_path / "keys" / "signing.pem"
    assert run_cli(["digest", "keygen", "--key", str(key_path)]) == 0
    out = capsys.readouterr().out
    fingerprint = out.split("fingerprint: ")[1].split()[0]
    assert os.stat(key_path).st_mode & 0o777 == 0o600
    sink = ArchiveSink(FilesystemStore(root))
    sink.open([(T, 0)])
    write(sink, range(0, 5))
    assert run_cli(["digest", "--once", "--key", str(key_path)]) == 0
    capsys.readouterr()
    pub = str(key_path) + ".pub"
    assert run_cli(["verify", "--public-key", pub]) == 0
    text = capsys.readouterr().out
    assert "1/1 digests valid, 1/1 objects valid, 0 gaps" in text
    assert run_cli(["verify", "--fingerprint", fingerprint, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    (root / object_key(T, 0, 0)).chmod(0o644)
    (root / object_key(T, 0, 0)).write_bytes(b"tampered")
    assert run_cli(["verify", "--public-key", pub, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [p["kind"] for p in report["problems"]] == ["modified_object"]
    assert run_cli(["verify"]) == 2  # no key: a configuration error


def test_the_periodic_verify_exports_success_time_and_failures(archive: Archive) -> None:
    from pipeline import telemetry

    failures = telemetry.VERIFY_FAILURES._value.get()
    telemetry.VERIFY_LAST_SUCCESS.set(0)
    archive.signer.sign()  # a current digest, so the schedule is kept
    assert commands.periodic_verify(archive.store, archive.trusted()) is not None
    assert telemetry.VERIFY_LAST_SUCCESS._value.get() > T0.timestamp()
    assert telemetry.VERIFY_FAILURES._value.get() == failures
    archive.delete(object_key(T, 1, 5))
    report = commands.periodic_verify(archive.store, archive.trusted())
    assert report is not None and not report.ok
    assert telemetry.VERIFY_FAILURES._value.get() == failures + 1


def test_the_schedule_signs_and_verifies_until_stopped(archive: Archive) -> None:
    import threading

    stop = threading.Event()
    before = len(list_digests(archive.store))
    ticks = iter(range(100))

    def clock() -> float:
        value = float(next(ticks))
        if value >= 5:
            stop.set()
        return value

    commands.run_schedule(archive.signer, archive.trusted(), 2.0, 10.0, stop, clock=clock)
    assert len(list_digests(archive.store)) > before
