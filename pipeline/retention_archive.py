"""``auditstream retention apply --archive``: remove the archive's expired oldest objects.

Per chain (topic-partition), oldest first, an object goes with its chain entry
only when
- every object before it goes too: removal is a contiguous prefix of the
  chain, never a hole;
- its newest record is older than the archive policy
  (``retention.archive_days``, by default ``archive.lock_days``; Kafka record
  time, as the chain records it);
- its lock has passed, and its entry's: on S3 the retain-until the store holds
  for every version, on the filesystem the write time plus ``archive.lock_days``
  (:meth:`~pipeline.sinks.storage.ObjectStore.retain_until`); the store itself
  refuses to delete a locked object;
- it is not the chain's newest entry: the archive sink resumes after it, and
  digests sign it.

Before removing anything the new start of the chain is recorded as a
retention horizon (:mod:`pipeline.integrity.horizon`), claimed by conditional
create, then objects and entries are removed oldest-first (each object before
its entry). A crash in between leaves entries below the horizon, which
``verify`` accepts as a removal in progress and the next run completes first.
Run one ``retention apply --archive`` at a time, as one ``digest`` signer runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pipeline.errors import AuditstreamError
from pipeline.integrity.chain import CHAIN_PREFIX, ChainEntry, entry_key, sha256_hex
from pipeline.integrity.horizon import (
    HORIZON_PREFIX,
    Horizon,
    StoredHorizon,
    horizon_prefix,
    iso,
    read_horizons,
)
from pipeline.sinks.storage import ObjectLocked, ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

TP = tuple[str, int]


class ChainRefused(AuditstreamError):
    """This chain is not touched: it does not verify, or the store refused a removal."""


@dataclass(frozen=True)
class Link:
    """A chain entry as retention weighs it: its key, content and the hash of its bytes."""

    key: str
    entry: ChainEntry
    hash: str


def keep_reason(
    link: Link,
    newest: bool,
    now: datetime,
    policy: timedelta,
    lock_until: Callable[[Link], datetime | None],
) -> str | None:
    """Why this entry (and so everything after it) stays; None when it may go.

    The lock is asked only when the policy allows the removal (it costs calls on S3).
    """
    entry = link.entry
    if newest:
        return f"offset {entry.first_offset:,} starts the newest entry, which always stays"
    newest_ms = entry.last_timestamp
    if newest_ms >= (now - policy).timestamp() * 1000:
        when = datetime.fromtimestamp(newest_ms / 1000, UTC)
        return (
            f"offsets {entry.first_offset:,}-{entry.last_offset:,} hold a record from "
            f"{iso(when)}, inside the {policy.days}-day archive policy"
        )
    until = lock_until(link)
    if until is not None and until > now:
        return f"{entry.key} is locked until {iso(until)}"
    return None


def removable_prefix(
    links: Iterable[Link],
    newest_key: str,
    now: datetime,
    policy: timedelta,
    lock_until: Callable[[Link], datetime | None],
) -> tuple[list[Link], Link | None, str]:
    """The oldest links that may go, the first one kept and why it stays.

    ``links`` is consumed lazily, oldest first, and no further than the first kept one.
    """
    removed: list[Link] = []
    for link in links:
        reason = keep_reason(link, link.key == newest_key, now, policy, lock_until)
        if reason is not None:
            return removed, link, reason
        removed.append(link)
    return removed, None, "the chain is empty"


# -- one chain -----------------------------------------------------------------------


@dataclass
class ChainResult:
    """What retention did (or, in a dry run, would do) to one chain."""

    topic: str
    partition: int
    removed_objects: int = 0
    removed_bytes: int = 0
    first_removed: int | None = None
    horizon: int | None = None  # where the chain starts once the removal is done
    finished: int = 0  # of the removed objects, those a crashed run had left below its horizon
    kept: str = ""
    refused: str | None = None

    @property
    def name(self) -> str:
        return f"{self.topic}[{self.partition}]"

    def count(self, link: Link) -> None:
        if self.first_removed is None:
            self.first_removed = link.entry.first_offset
        self.removed_objects += 1
        self.removed_bytes += link.entry.size

    def line(self, dry_run: bool) -> str:
        done = ""
        if self.removed_objects and self.horizon is not None:
            done = (
                f"{'would remove' if dry_run else 'removed'} {_objects(self.removed_objects)}, "
                f"{self.removed_bytes:,} bytes (offsets {self.first_removed:,}-"
                f"{self.horizon - 1:,}); horizon {'would be' if dry_run else 'now'} offset "
                f"{self.horizon:,}"
            )
            if self.finished:
                done += f", finishing an interrupted removal of {_objects(self.finished)}"
        if self.refused:
            return f"REFUSED {self.name}: {self.refused}" + (
                f" (before that: {done})" if done else ""
            )
        if not done:
            return f"keep {self.name}: {self.kept}"
        return f"{self.name}: {done}; the rest stays: {self.kept}"


def _objects(count: int) -> str:
    return f"{count:,} object{'' if count == 1 else 's'}"


class _Chain:
    """One chain's entries and horizons in the store, read as retention needs them."""

    def __init__(
        self,
        store: ObjectStore,
        topic: str,
        partition: int,
        entry_keys: list[str],
        horizon_keys: list[str],
    ) -> None:
        self.store = store
        self.topic, self.partition = topic, partition
        self.name = f"{topic}[{partition}]"
        self.entry_keys = sorted(entry_keys, key=lambda k: k.encode())
        problems: list[str] = []
        self.horizons = read_horizons(
            store, horizon_keys, topic, partition, lambda kind, key, d: problems.append(d)
        )
        if problems:
            raise ChainRefused(f"its retention horizons do not verify ({problems[0]}); run verify")
        self.current: StoredHorizon | None = self.horizons[-1] if self.horizons else None

    @property
    def cut(self) -> int:
        return self.current.first_offset if self.current else 0

    def read(self, key: str) -> Link:
        data = self.store.get(key)
        try:
            entry = ChainEntry.from_bytes(data)
        except ValueError as exc:
            raise ChainRefused(f"chain entry {key} is unreadable ({exc}); run verify") from None
        if entry.entry_key != key or (entry.topic, entry.partition) != (self.topic, self.partition):
            raise ChainRefused(f"chain entry {key} describes {entry.key}; run verify")
        return Link(key, entry, sha256_hex(data))

    def remnants(self) -> list[str]:
        """Entries a crashed run left below the current horizon, once the horizon checks out.

        The entry at the horizon must exist and link to it: a horizon past the chain's
        end (forged or corrupt) never makes retention remove the newest entries.
        """
        if self.current is None:
            return []
        at_cut = entry_key(self.topic, self.partition, self.cut)
        if at_cut not in self.entry_keys:
            raise ChainRefused(
                f"no entry starts at its retention horizon, offset {self.cut:,}; run verify"
            )
        if self.read(at_cut).entry.prev != self.current.horizon.last_removed_entry:
            raise ChainRefused(
                f"chain entry {at_cut} does not link to {self.current.key}; run verify"
            )
        return [k for k in self.entry_keys if _offset(k) < self.cut]

    def kept_links(self) -> Iterator[Link]:
        """Entries from the horizon on, oldest first, each checked against the one before."""
        previous: Link | None = None
        for key in (k for k in self.entry_keys if _offset(k) >= self.cut):
            link = self.read(key)
            entry = link.entry
            if previous is not None:
                expected, what = previous.hash, f"the entry before it ({previous.key})"
            elif self.current is not None:
                if entry.first_offset != self.cut:
                    raise ChainRefused(
                        f"no entry starts at its retention horizon, offset {self.cut:,}; run verify"
                    )
                expected, what = self.current.horizon.last_removed_entry, self.current.key
            else:
                expected, what = None, "nothing (the oldest entry)"
            if entry.prev != expected or (
                previous is not None and entry.first_offset != previous.entry.last_offset + 1
            ):
                raise ChainRefused(f"chain entry {key} does not link to {what}; run verify")
            yield link
            previous = link

    def lock_until(self, link: Link) -> datetime | None:
        """The later of the object's and its entry's retain-until."""
        try:
            found = [self.store.retain_until(link.entry.key), self.store.retain_until(link.key)]
        except ObjectNotFound as exc:
            raise ChainRefused(f"{exc}: the chain describes a missing object; run verify") from None
        dates = [d for d in found if d is not None]
        return max(dates) if dates else None

    def remove(self, link: Link) -> None:
        """The object first, then its entry: an entry never outlives the record of its object."""
        try:
            self.store.delete(link.entry.key)
            self.store.delete(link.key)
        except ObjectLocked as exc:
            raise ChainRefused(f"{exc}; run retention again once the lock has passed") from None
        log.info("retention: removed %s and %s", link.entry.key, link.key)

    def claim(self, horizon: Horizon) -> None:
        """Record the horizon (or adopt the same one from an interrupted run)."""
        key = horizon.key
        if not self.store.put_if_absent(key, horizon.to_bytes()):
            theirs = Horizon.from_bytes(self.store.get(key))
            if not theirs.same_cut(horizon):
                raise ChainRefused(f"{key} already records another horizon; run verify")
            return
        keys = self.store.list(horizon_prefix(self.topic, self.partition))
        before = keys[keys.index(key) - 1] if keys.index(key) > 0 else None
        if before != (self.current.key if self.current else None):
            raise ChainRefused(
                f"another retention run recorded {before} while this one recorded {key}; run "
                "one `retention apply --archive` at a time, then `auditstream verify`"
            )


def _offset(key: str) -> int:
    return int(key.rsplit("/", 1)[1].split(".")[0])


def trim_chain(
    chain: _Chain, result: ChainResult, now: datetime, policy_days: int, *, dry_run: bool
) -> None:
    """Finish an interrupted removal, then remove this chain's expired prefix, into ``result``."""
    for key in chain.remnants():
        link = chain.read(key)
        if not dry_run:
            chain.remove(link)
        result.count(link)
        result.finished += 1
        result.horizon = chain.cut
    if not chain.entry_keys:
        result.kept = "no chain entries"
        return
    removed, kept, result.kept = removable_prefix(
        chain.kept_links(), chain.entry_keys[-1], now, timedelta(days=policy_days), chain.lock_until
    )
    if not removed or kept is None:
        return
    horizon = Horizon(
        topic=chain.topic,
        partition=chain.partition,
        first_offset=kept.entry.first_offset,
        last_removed_entry=removed[-1].hash,
        removed_objects=len(removed),
        removed_bytes=sum(link.entry.size for link in removed),
        removed_records=sum(link.entry.count for link in removed),
        newest_removed_timestamp=max(link.entry.last_timestamp for link in removed),
        created=iso(now),
        policy_days=policy_days,
        previous=chain.current.hash if chain.current else None,
    )
    if not dry_run:
        chain.claim(horizon)
    result.horizon = horizon.first_offset
    for link in removed:
        if not dry_run:
            chain.remove(link)
        result.count(link)


# -- the archive ----------------------------------------------------------------------


@dataclass
class ArchiveRetention:
    """Every chain's result, and the totals the command prints."""

    chains: list[ChainResult] = field(default_factory=list)

    @property
    def refused(self) -> list[ChainResult]:
        return [c for c in self.chains if c.refused]

    def summary(self, dry_run: bool, policy_days: int, now: datetime, where: str) -> str:
        changed = [c for c in self.chains if c.removed_objects and not c.refused]
        objects = sum(c.removed_objects for c in self.chains)
        size = sum(c.removed_bytes for c in self.chains)
        verb = "would remove" if dry_run else "removed"
        return (
            f"{'dry run: ' if dry_run else ''}archive {where}: {verb} {_objects(objects)} "
            f"({size:,} bytes) from {len(changed)} chains, {len(self.refused)} refused, "
            f"{len(self.chains) - len(changed) - len(self.refused)} unchanged; under the "
            f"{policy_days}-day archive policy, objects whose records are all older than "
            f"{iso(now - timedelta(days=policy_days))} go once their lock has passed"
        )


def chains_of(store: ObjectStore) -> dict[TP, tuple[list[str], list[str]]]:
    """Every chain's entry keys and horizon keys (one listing of each prefix)."""
    found: dict[TP, tuple[list[str], list[str]]] = {}
    for prefix, slot in ((CHAIN_PREFIX, 0), (HORIZON_PREFIX, 1)):
        for key in store.list(prefix):
            parts = key[len(prefix) :].split("/")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].endswith(".json"):
                lists = found.setdefault((parts[0], int(parts[1])), ([], []))
                lists[slot].append(key)
    return found


def apply_archive(
    store: ObjectStore,
    policy_days: int,
    now: datetime,
    *,
    dry_run: bool,
    out: Callable[[str], None] = print,
) -> ArchiveRetention:
    """Apply archive retention to every chain (or only print what it would do)."""
    now = now.astimezone(UTC).replace(microsecond=0)  # as the horizon records it
    done = ArchiveRetention()
    for (topic, partition), (entries, horizons) in sorted(chains_of(store).items()):
        result = ChainResult(topic, partition)
        try:
            chain = _Chain(store, topic, partition, entries, horizons)
            trim_chain(chain, result, now, policy_days, dry_run=dry_run)
        except ChainRefused as exc:
            result.refused = str(exc)
            log.error("retention: %s[%d] refused: %s", topic, partition, exc)
        done.chains.append(result)
        out(result.line(dry_run))
    out(done.summary(dry_run, policy_days, now, store.location))
    return done
