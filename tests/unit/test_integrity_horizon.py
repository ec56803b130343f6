"""verify after archive retention: chains that start at a recorded horizon, and forgeries."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.integrity.chain import entry_key, sha256_hex
from pipeline.integrity.digest import DigestSigner, list_digests
from pipeline.integrity.horizon import Horizon, horizon_key
from pipeline.integrity.verify import TrustedKeys, VerifyReport, verify_archive
from pipeline.retention_archive import apply_archive
from pipeline.sinks.archive import ArchiveSink, object_key
from pipeline.sinks.base import Batch, Record
from pipeline.sinks.storage import FilesystemStore

T = "access-events"
T0 = (datetime.now(UTC) - timedelta(hours=2, minutes=30)).replace(microsecond=0)
HOUR = timedelta(hours=1)
OLD_MS = int((T0 - timedelta(days=500)).timestamp() * 1000)
RECENT_MS = int(T0.timestamp() * 1000)
POLICY = 400


class Archive:
    """Partition 0: offsets 0-29 from 500 days ago, 30-49 recent; a digest after 19, 39, 49."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = FilesystemStore(root)
        self.key = Ed25519PrivateKey.generate()
        self.signer = DigestSigner(self.store, self.key, 3600)
        self.sink = ArchiveSink(self.store)
        self.sink.open([(T, 0)])
        self.write(0, 10, OLD_MS)
        self.write(10, 20, OLD_MS)
        self.signer.sign(T0)
        self.write(20, 30, OLD_MS)
        self.write(30, 40, RECENT_MS)
        self.signer.sign(T0 + HOUR)
        self.write(40, 50, RECENT_MS)
        self.signer.sign(T0 + 2 * HOUR)

    def write(self, start: int, end: int, stamp_ms: int) -> None:
        batch = Batch(
            records=[Record(T, 0, o, 2, stamp_ms + o, b"k", b"v") for o in range(start, end)]
        )
        batch.attempts = 1
        self.sink.write(batch)

    def retention(self) -> None:
        result = apply_archive(
            self.store, POLICY, datetime.now(UTC), dry_run=False, out=lambda _: None
        )
        assert not result.refused and result.chains[0].horizon == 30

    def verify(
        self, now: datetime = T0 + 2 * HOUR, required_days: int | None = None
    ) -> VerifyReport:
        trusted = TrustedKeys(public_keys=[self.key.public_key()])
        return verify_archive(self.store, trusted, now=now, required_days=required_days)

    def remove(self, *keys: str) -> None:
        for key in keys:
            (self.root / key).unlink()

    def rewrite_horizon(self, horizon: Horizon) -> None:
        path = self.root / horizon.key
        if path.exists():
            path.chmod(0o644)
        path.write_bytes(horizon.to_bytes())

    def horizon(self, first_offset: int = 30) -> Horizon:
        return Horizon.from_bytes(self.store.get(horizon_key(T, 0, first_offset)))


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "archive")


def test_a_chain_starting_at_its_recorded_horizon_is_clean(archive: Archive) -> None:
    archive.retention()
    report = archive.verify()
    assert report.ok, report.text()
    # The digests signed before the removal still verify, though the first one's head is gone.
    assert report.summary() == "3/3 digests valid, 2/2 objects valid, 0 gaps"
    assert report.horizons == {f"{T}[0]": 30}
    assert report.uncovered_horizons == 1  # written after the newest digest
    text = report.text()
    assert f"{T}[0] starts at its retention horizon, offset 30 (recorded " in text
    assert "under a 400-day policy, 3 objects removed then)" in text
    assert "1 retention horizons not yet covered by a digest" in text
    assert report.to_json()["retention_horizons"]["uncovered"] == 1

    # The next digest signs the horizon beside the chain head.
    archive.signer.sign(T0 + 3 * HOUR)
    newest = json.loads(archive.store.get(list_digests(archive.store)[-1]))["body"]
    assert [h["first_offset"] for h in newest["horizons"]] == [30]
    report = archive.verify(T0 + 3 * HOUR)
    assert report.ok and report.uncovered_horizons == 0, report.text()


def test_removing_the_oldest_objects_without_a_horizon_is_named(archive: Archive) -> None:
    archive.remove(object_key(T, 0, 0), entry_key(T, 0, 0), object_key(T, 0, 10))
    archive.remove(entry_key(T, 0, 10))
    report = archive.verify()
    assert report.kinds() == {"deleted_object"}
    assert report.problems[0].key == entry_key(T, 0, 20)
    assert "offsets before 20 were deleted" in report.problems[0].detail


def test_a_horizon_that_does_not_match_the_first_kept_entry_is_named(archive: Archive) -> None:
    archive.retention()
    archive.rewrite_horizon(replace(archive.horizon(), last_removed_entry="0" * 64))
    report = archive.verify()
    assert report.kinds() == {"horizon_mismatch"}
    assert report.problems[0].key == horizon_key(T, 0, 30)


def test_a_horizon_that_cuts_an_entry_is_named(archive: Archive) -> None:
    archive.retention()
    cutting = replace(archive.horizon(), first_offset=35)
    archive.remove(horizon_key(T, 0, 30))
    archive.rewrite_horizon(cutting)
    report = archive.verify()
    assert "horizon_mismatch" in report.kinds()
    assert any("no entry of" in p.detail for p in report.problems)


def test_a_forged_horizon_is_uncovered_and_its_early_removal_named(archive: Archive) -> None:
    """Without the key: remove recent objects too, and record a horizon that links right."""
    archive.retention()
    archive.signer.sign(T0 + 3 * HOUR)  # the legitimate horizon, signed
    last_removed = sha256_hex(archive.store.get(entry_key(T, 0, 30)))
    archive.remove(object_key(T, 0, 30), entry_key(T, 0, 30))
    first = archive.horizon()
    forged = replace(
        first,
        first_offset=40,
        last_removed_entry=last_removed,
        previous=sha256_hex(first.to_bytes()),
        created=(T0 + 3 * HOUR).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    assert archive.store.put_if_absent(forged.key, forged.to_bytes())
    report = archive.verify(T0 + 3 * HOUR)
    assert report.uncovered_horizons == 1
    # the second digest signed the chain up to offset 39 with a record from T0
    assert report.kinds() == {"early_removal"}
    assert report.problems[0].key == forged.key
    assert "inside a 400-day policy" in report.problems[0].detail


def test_a_horizon_under_a_shorter_policy_than_the_auditor_requires_is_named(
    archive: Archive,
) -> None:
    archive.retention()
    archive.rewrite_horizon(replace(archive.horizon(), policy_days=30))
    assert archive.verify().ok  # nothing outside the archive says 30 days is too short
    report = archive.verify(required_days=400)
    assert report.kinds() == {"early_removal"}
    assert "30-day policy, shorter than the 400 days required" in report.problems[0].detail
    assert archive.verify(required_days=365).kinds() == {"early_removal"}
    assert archive.verify(required_days=30).ok


def test_a_signed_horizon_altered_or_removed_is_named(archive: Archive) -> None:
    archive.retention()
    archive.signer.sign(T0 + 3 * HOUR)
    archive.rewrite_horizon(replace(archive.horizon(), policy_days=401))
    report = archive.verify(T0 + 3 * HOUR)
    assert report.kinds() == {"altered_horizon"}
    assert "differs from the horizon" in report.problems[0].detail
    archive.remove(horizon_key(T, 0, 30))
    report = archive.verify(T0 + 3 * HOUR)
    assert "altered_horizon" in report.kinds()
    assert any("it is gone" in p.detail for p in report.problems)


def test_horizons_chain_and_the_newest_digest_may_sign_a_head_retention_removed_since(
    tmp_path: Path,
) -> None:
    store = FilesystemStore(tmp_path)
    sink = ArchiveSink(store)
    sink.open([(T, 0)])
    now = datetime.now(UTC)

    def write(start: int) -> None:
        batch = Batch(
            records=[Record(T, 0, o, 2, OLD_MS + o, b"k", b"v") for o in range(start, start + 10)]
        )
        batch.attempts = 1
        sink.write(batch)

    key = Ed25519PrivateKey.generate()
    signer = DigestSigner(store, key, 3600)
    trusted = TrustedKeys(public_keys=[key.public_key()])
    write(0)
    write(10)
    signer.sign(now - HOUR)  # signs the head at offsets 10-19
    apply_archive(store, POLICY, now, dry_run=False, out=lambda _: None)  # horizon at 10
    write(20)
    apply_archive(store, POLICY, now, dry_run=False, out=lambda _: None)  # horizon at 20
    second = Horizon.from_bytes(store.get(horizon_key(T, 0, 20)))
    assert second.previous == sha256_hex(store.get(horizon_key(T, 0, 10)))
    report = verify_archive(store, trusted, now=now)
    assert report.ok, report.text()  # the newest digest's head is gone: below the horizon
    assert report.uncovered_horizons == 2
    signer.sign(now)
    report = verify_archive(store, trusted, now=now)
    assert report.ok and report.uncovered_horizons == 0, report.text()
    # a dropped horizon record breaks the chain of horizons (and the digest's coverage)
    (tmp_path / horizon_key(T, 0, 10)).unlink()
    report = verify_archive(store, trusted, now=now)
    assert report.kinds() == {"altered_horizon"}
    assert {p.key for p in report.problems} == {horizon_key(T, 0, 20)}


def test_a_removal_interrupted_after_the_horizon_is_accepted(archive: Archive) -> None:
    """Horizon recorded, the oldest object and entry gone, the next object gone: a crash."""
    data = {k: archive.store.get(k) for k in (entry_key(T, 0, 20),)}
    horizon = Horizon(
        topic=T,
        partition=0,
        first_offset=30,
        last_removed_entry=sha256_hex(data[entry_key(T, 0, 20)]),
        removed_objects=3,
        removed_bytes=1,
        removed_records=30,
        newest_removed_timestamp=OLD_MS + 29,
        created=(T0 + 2 * HOUR).strftime("%Y-%m-%dT%H:%M:%SZ"),
        policy_days=POLICY,
        previous=None,
    )
    assert archive.store.put_if_absent(horizon.key, horizon.to_bytes())
    archive.remove(object_key(T, 0, 0), entry_key(T, 0, 0), object_key(T, 0, 10))
    report = archive.verify()
    assert report.ok, report.text()
    assert report.removal_in_progress == 2 and report.horizons == {f"{T}[0]": 30}
    assert "2 entries below a retention horizon not yet removed" in report.text()
    apply_archive(archive.store, POLICY, datetime.now(UTC), dry_run=False, out=lambda _: None)
    report = archive.verify()
    assert report.ok and report.removal_in_progress == 0, report.text()
