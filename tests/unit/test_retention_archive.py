"""Archive retention without services: the removable prefix, horizons, crashes, locks."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.integrity.chain import ChainEntry, chain_prefix, entry_key, sha256_hex
from pipeline.integrity.horizon import Horizon, horizon_key, horizon_prefix
from pipeline.retention_archive import Link, apply_archive, removable_prefix
from pipeline.settings import load_settings
from pipeline.sinks.archive import ArchiveSink, object_key
from pipeline.sinks.base import Batch, Record
from pipeline.sinks.storage import FilesystemStore, ObjectLocked

T = "access-events"
NOW = datetime.now(UTC).replace(microsecond=0)
OLD_MS = int((NOW - timedelta(days=500)).timestamp() * 1000)
RECENT_MS = int((NOW - timedelta(days=10)).timestamp() * 1000)
POLICY = 400


def write(sink: ArchiveSink, offsets: range, stamp_ms: int, partition: int = 0) -> None:
    batch = Batch(
        records=[Record(T, partition, o, 2, stamp_ms + o, b"k", b"v%d" % o) for o in offsets]
    )
    batch.attempts = 1
    sink.write(batch)


def archive(root: Path, lock_period: timedelta | None = None) -> FilesystemStore:
    """Partition 0: objects of 10 records, offsets 0-29 old, 30-49 recent; partition 1: old."""
    store = FilesystemStore(root, lock_period=lock_period)
    sink = ArchiveSink(store)
    sink.open([(T, 0), (T, 1)])
    for start in range(0, 50, 10):
        write(sink, range(start, start + 10), OLD_MS if start < 30 else RECENT_MS)
    for start in range(0, 20, 10):
        write(sink, range(start, start + 10), OLD_MS, partition=1)
    return store


def keys(store: FilesystemStore) -> list[str]:
    return store.list("")


# -- the prefix (pure) --------------------------------------------------------------------


def link(first: int, last_ms: int) -> Link:
    entry = ChainEntry(
        topic=T,
        partition=0,
        key=object_key(T, 0, first),
        sha256="0" * 64,
        size=100,
        first_offset=first,
        last_offset=first + 9,
        count=10,
        skipped_offsets=0,
        first_timestamp=last_ms - 5,
        last_timestamp=last_ms,
        prev=None,
    )
    return Link(entry.entry_key, entry, sha256_hex(entry.to_bytes()))


def test_only_a_contiguous_prefix_of_expired_unlocked_entries_may_go() -> None:
    links = [link(o, OLD_MS) for o in range(0, 60, 10)]
    locked = {links[2].key: NOW + timedelta(days=1)}
    asked: list[str] = []

    def lock_until(candidate: Link) -> datetime | None:
        asked.append(candidate.key)
        return locked.get(candidate.key)

    policy = timedelta(days=POLICY)
    removed, kept, reason = removable_prefix(links, links[-1].key, NOW, policy, lock_until)
    # entries 3 and 4 are expired and unlocked too, but removing them would leave a hole
    assert [r.entry.first_offset for r in removed] == [0, 10]
    assert kept is links[2] and "locked until" in reason
    assert asked == [links[0].key, links[1].key, links[2].key]  # not a call further


def test_the_policy_stops_the_prefix_before_the_lock_is_asked() -> None:
    links = [link(0, OLD_MS), link(10, RECENT_MS), link(20, OLD_MS), link(30, OLD_MS)]
    asked: list[str] = []

    def lock_until(candidate: Link) -> datetime | None:
        asked.append(candidate.key)
        return None

    removed, kept, reason = removable_prefix(
        links, links[-1].key, NOW, timedelta(days=POLICY), lock_until
    )
    assert [r.entry.first_offset for r in removed] == [0]
    assert kept is links[1] and "inside the 400-day archive policy" in reason
    assert asked == [links[0].key]


def test_the_newest_entry_always_stays() -> None:
    links = [link(0, OLD_MS), link(10, OLD_MS)]
    removed, kept, reason = removable_prefix(
        links, links[-1].key, NOW, timedelta(days=POLICY), lambda _: None
    )
    assert [r.entry.first_offset for r in removed] == [0]
    assert kept is links[1] and "newest entry" in reason


# -- the horizon record -----------------------------------------------------------------


def test_a_horizon_record_round_trips_and_refuses_anything_else() -> None:
    horizon = Horizon(
        topic=T,
        partition=3,
        first_offset=12_000,
        last_removed_entry="a" * 64,
        removed_objects=12,
        removed_bytes=81_234,
        removed_records=12_000,
        newest_removed_timestamp=OLD_MS,
        created="2026-01-01T10:00:00Z",
        policy_days=400,
        previous=None,
    )
    data = horizon.to_bytes()
    assert Horizon.from_bytes(data) == horizon
    assert horizon.key == horizon_key(T, 3, 12_000) == f"_horizon/{T}/00003/{12_000:020d}.json"
    assert horizon.created_at == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert data.startswith(b'{"created":"2026-01-01T10:00:00Z","first_offset":12000,')
    for bad in (b"[]", b"{", data.replace(b'"version":1', b'"version":2'), b'{"topic":"t"}'):
        with pytest.raises(ValueError):
            Horizon.from_bytes(bad)


# -- the archive ----------------------------------------------------------------------------


def test_a_dry_run_changes_nothing_and_says_what_it_would_remove(tmp_path: Path) -> None:
    store = archive(tmp_path)
    before = keys(store)
    out: list[str] = []
    result = apply_archive(store, POLICY, NOW, dry_run=True, out=out.append)
    assert keys(store) == before
    assert not result.refused
    assert (
        out[0].startswith(f"{T}[0]: would remove 3 objects, ")
        and "(offsets 0-29); horizon would be offset 30" in out[0]
    )
    assert "inside the 400-day archive policy" in out[0]
    assert out[1].startswith(f"{T}[1]: would remove 1 object,") and "newest entry" in out[1]
    assert out[-1].startswith("dry run: archive ")


def test_retention_records_the_horizon_then_removes_exactly_the_expired_prefix(
    tmp_path: Path,
) -> None:
    store = archive(tmp_path)
    entries = {k: store.get(k) for k in store.list(chain_prefix(T, 0))}
    out: list[str] = []
    result = apply_archive(store, POLICY, NOW, dry_run=False, out=out.append)
    assert not result.refused
    assert store.list(f"{T}/00000/") == [object_key(T, 0, o) for o in (30, 40)]
    assert store.list(chain_prefix(T, 0)) == [entry_key(T, 0, o) for o in (30, 40)]
    (key,) = store.list(horizon_prefix(T, 0))
    horizon = Horizon.from_bytes(store.get(key))
    assert horizon.first_offset == 30 and horizon.previous is None
    assert horizon.last_removed_entry == sha256_hex(entries[entry_key(T, 0, 20)])
    first_kept = ChainEntry.from_bytes(store.get(entry_key(T, 0, 30)))
    assert first_kept.prev == horizon.last_removed_entry
    assert (horizon.removed_objects, horizon.removed_records) == (3, 30)
    assert horizon.policy_days == POLICY and horizon.created_at == NOW
    assert f"{T}[0]: removed 3 objects" in out[0] and "horizon now offset 30" in out[0]
    # partition 1: the newest entry stays, so the sink resumes after it
    assert store.list(f"{T}/00001/") == [object_key(T, 1, 10)]
    sink = ArchiveSink(store)
    assert sink.open([(T, 0), (T, 1)]) == {(T, 0): 50, (T, 1): 20}

    # nothing more to do: a second run changes nothing
    before = keys(store)
    apply_archive(store, POLICY, NOW, dry_run=False, out=out.append)
    assert keys(store) == before

    # later, the next horizon links to the first
    write(sink, range(50, 60), RECENT_MS)
    later = NOW + timedelta(days=POLICY)
    apply_archive(store, POLICY, later, dry_run=False, out=out.append)
    second = Horizon.from_bytes(store.get(horizon_key(T, 0, 50)))
    assert second.previous == sha256_hex(store.get(key))
    assert store.list(f"{T}/00000/") == [object_key(T, 0, 50)]


def test_a_run_interrupted_after_its_horizon_is_completed_by_the_next(tmp_path: Path) -> None:
    finished = archive(tmp_path / "finished")
    apply_archive(finished, POLICY, NOW, dry_run=False, out=lambda _: None)
    # The same archive as that run's crash left it: its horizon recorded, the first object
    # and entry removed, the second object removed but not yet its entry.
    crashed = archive(tmp_path / "crashed")
    key = horizon_key(T, 0, 30)
    assert crashed.put_if_absent(key, finished.get(key))
    for removed in (object_key(T, 0, 0), entry_key(T, 0, 0), object_key(T, 0, 10)):
        crashed.delete(removed)

    out: list[str] = []
    result = apply_archive(crashed, POLICY, NOW, dry_run=False, out=out.append)
    assert not result.refused
    assert crashed.list(chain_prefix(T, 0)) == [entry_key(T, 0, o) for o in (30, 40)]
    assert crashed.list(f"{T}/00000/") == [object_key(T, 0, o) for o in (30, 40)]
    assert crashed.list(horizon_prefix(T, 0)) == [key]  # not a second one
    assert "finishing an interrupted removal of 2 objects" in out[0]
    assert keys(crashed) == keys(finished)


def test_a_chain_that_does_not_link_is_refused_and_left_alone(tmp_path: Path) -> None:
    store = archive(tmp_path)
    path = tmp_path / entry_key(T, 0, 10)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b'"count":10', b'"count":11'))
    before = store.list(f"{T}/00000/")
    out: list[str] = []
    result = apply_archive(store, POLICY, NOW, dry_run=False, out=out.append)
    assert [c.name for c in result.refused] == [f"{T}[0]"]
    assert out[0].startswith(f"REFUSED {T}[0]: chain entry {entry_key(T, 0, 20)} does not link")
    assert store.list(f"{T}/00000/") == before
    assert store.list(horizon_prefix(T, 0)) == []
    assert store.list(f"{T}/00001/") == [object_key(T, 1, 10)]  # the other chain went on


def test_a_horizon_past_the_chain_end_never_removes_the_newest_entries(tmp_path: Path) -> None:
    store = archive(tmp_path)
    forged = Horizon(
        topic=T,
        partition=0,
        first_offset=100,
        last_removed_entry=sha256_hex(store.get(entry_key(T, 0, 40))),
        removed_objects=5,
        removed_bytes=1,
        removed_records=50,
        newest_removed_timestamp=OLD_MS,
        created="2026-01-01T00:00:00Z",
        policy_days=POLICY,
        previous=None,
    )
    assert store.put_if_absent(forged.key, forged.to_bytes())
    before = keys(store)
    out: list[str] = []
    result = apply_archive(store, POLICY, NOW, dry_run=False, out=out.append)
    assert [c.name for c in result.refused] == [f"{T}[0]"]
    assert "no entry starts at its retention horizon, offset 100" in out[0]
    assert [k for k in keys(store) if "/00000/" in k] == [k for k in before if "/00000/" in k]


def test_filesystem_locks_run_from_the_write_time_and_the_store_refuses_before(
    tmp_path: Path,
) -> None:
    store = archive(tmp_path, lock_period=timedelta(days=POLICY))
    key = object_key(T, 0, 0)
    until = store.retain_until(key)
    assert until is not None and until > NOW + timedelta(days=POLICY - 1)
    with pytest.raises(ObjectLocked, match="locked until"):
        store.delete(key)
    out: list[str] = []
    apply_archive(store, POLICY, NOW, dry_run=False, out=out.append)
    assert store.list(f"{T}/00000/")[0] == key and "is locked until" in out[0]
    # written 401 days ago: objects 0 and 10 (and their entries); 20 stays locked
    aged = (NOW - timedelta(days=POLICY + 1)).timestamp()
    for offset in (0, 10):
        for path in (tmp_path / object_key(T, 0, offset), tmp_path / entry_key(T, 0, offset)):
            os.utime(path, (aged, aged))
    apply_archive(store, POLICY, NOW, dry_run=False, out=out.append)
    assert store.list(f"{T}/00000/")[0] == object_key(T, 0, 20)
    assert Horizon.from_bytes(store.get(horizon_key(T, 0, 20))).removed_objects == 2


# -- settings -------------------------------------------------------------------------------


def test_the_archive_policy_follows_the_lock_and_never_undercuts_an_index() -> None:
    settings = load_settings()
    assert settings.archive_policy_days == settings.archive.lock_days == 400
    assert settings.retention.restore_days == 30
    assert load_settings(retention={"archive_days": 500}).archive_policy_days == 500
    with pytest.raises(ConfigError, match=r"retention\.archive_days"):
        load_settings(retention={"archive_days": 300})


def test_a_real_archive_run_refuses_a_clock_in_the_future() -> None:
    from pipeline.retention import run_apply

    ahead = datetime.now(UTC) + timedelta(days=2)
    args = argparse.Namespace(dry_run=False, ism=False, archive=True, now=ahead)
    with pytest.raises(ConfigError, match="only look ahead with --dry-run"):
        run_apply(args, load_settings())
