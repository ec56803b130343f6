"""Retention horizons: where a chain starts once archive retention removed its oldest part.

``auditstream retention apply --archive`` removes the oldest objects of a
partition's chain, and their entries, only as a contiguous prefix and never
the newest entry. Before it removes anything it claims an immutable horizon
record by conditional create (locked on S3, like chain entries) under
``_horizon/<topic>/<partition:05d>/<first kept offset:020d>.json``::

    {"created": "2026-01-01T10:00:00Z", "first_offset": 12000,
     "last_removed_entry": "<SHA-256 of the chain entry just before first_offset>",
     "newest_removed_timestamp": 1700000004000, "partition": 3, "policy_days": 400,
     "previous": "<SHA-256 of this chain's previous horizon record, or null>",
     "removed_bytes": 81234567, "removed_objects": 12, "removed_records": 12000,
     "topic": "access-events", "version": 1}

- The chain then starts at ``first_offset``, and its first kept entry's ``prev``
  must equal ``last_removed_entry``: verify checks that link as it checks every
  other. ``removed_*`` count what this step removed (since ``previous``).
- Horizon records are never removed; each links to the one before, so none can
  be dropped or replaced without verify naming it.
- Removal runs oldest-first after the claim. Entries and objects still below
  the newest horizon are a removal in progress (a crash; the next run completes
  it), not a problem.
- ``auditstream digest`` signs every chain's newest horizon beside its head: a
  horizon written after the newest digest is reported as not yet covered, one
  altered or removed after a digest signed it is named. And every removal is
  checked against what digests signed: a signed chain head below a horizon
  whose newest record was younger than that horizon's policy was removed early.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipeline.integrity.chain import (
    ChainEntry,
    canonical_json,
    entry_key,
    newest_per_partition,
    sha256_hex,
)
from pipeline.sinks.storage import ObjectNotFound, ObjectStore

if TYPE_CHECKING:
    from pipeline.integrity.digest import Digest

HORIZON_PREFIX = "_horizon/"
HORIZON_VERSION = 1
_TIME = "%Y-%m-%dT%H:%M:%SZ"

#: ``report.add(kind, key, detail)``: how checks name a problem
AddProblem = Callable[[str, str, str], None]
TP = tuple[str, int]


def horizon_prefix(topic: str, partition: int) -> str:
    return f"{HORIZON_PREFIX}{topic}/{partition:05d}/"


def horizon_key(topic: str, partition: int, first_offset: int) -> str:
    """``_horizon/access-events/00003/00000000000000012000.json``."""
    return f"{horizon_prefix(topic, partition)}{first_offset:020d}.json"


@dataclass(frozen=True)
class Horizon:
    """One retention step of a chain: it now starts at ``first_offset``."""

    topic: str
    partition: int
    first_offset: int  # the first offset kept
    last_removed_entry: str  # SHA-256 of the removed entry the first kept one links to
    removed_objects: int
    removed_bytes: int
    removed_records: int
    newest_removed_timestamp: int  # ms: the newest Kafka record time removed
    created: str  # when retention recorded it (UTC, ISO 8601)
    policy_days: int  # the archive policy it applied
    previous: str | None  # SHA-256 of the chain's previous horizon record
    version: int = HORIZON_VERSION

    @property
    def key(self) -> str:
        return horizon_key(self.topic, self.partition, self.first_offset)

    @property
    def created_at(self) -> datetime:
        return datetime.strptime(self.created, _TIME).replace(tzinfo=UTC)

    def to_bytes(self) -> bytes:
        return canonical_json(asdict(self))

    def same_cut(self, other: Horizon) -> bool:
        """Whether ``other`` records the same cut of the same chain (a re-run's claim)."""
        fields = ("topic", "partition", "first_offset", "last_removed_entry", "previous")
        return all(getattr(self, f) == getattr(other, f) for f in fields)

    @classmethod
    def from_bytes(cls, data: bytes) -> Horizon:
        """Parse a horizon record; ValueError names what is wrong."""
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            horizon = cls(**raw)
            datetime.strptime(horizon.created, _TIME)
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            raise ValueError(f"not a horizon record: {exc}") from None
        ints = (
            horizon.partition,
            horizon.first_offset,
            horizon.removed_objects,
            horizon.removed_bytes,
            horizon.removed_records,
            horizon.newest_removed_timestamp,
            horizon.policy_days,
        )
        if not all(isinstance(v, int) for v in ints) or horizon.version != HORIZON_VERSION:
            raise ValueError("not a version-1 horizon record")
        return horizon


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_TIME)


@dataclass(frozen=True)
class StoredHorizon:
    """A horizon record as stored: its key and the SHA-256 of its bytes."""

    key: str
    horizon: Horizon
    hash: str

    @property
    def first_offset(self) -> int:
        return self.horizon.first_offset

    def describe(self) -> str:
        h = self.horizon
        return (
            f"offset {h.first_offset:,} (recorded {h.created} under a {h.policy_days}-day "
            f"policy, {h.removed_objects:,} objects removed then)"
        )


def read_horizons(
    store: ObjectStore, keys: Iterable[str], topic: str, partition: int, add: AddProblem
) -> list[StoredHorizon]:
    """A chain's horizon records, oldest first; each problem is named through ``add``.

    Unreadable records are left out; a record that does not link to the one
    before it is kept (the newest still says where the chain starts).
    """
    found: list[StoredHorizon] = []
    previous: str | None = None
    for key in sorted(keys, key=lambda k: k.encode()):
        try:
            data = store.get(key)
        except ObjectNotFound:
            continue
        digest = sha256_hex(data)
        try:
            horizon = Horizon.from_bytes(data)
        except ValueError as exc:
            add("altered_horizon", key, f"unreadable retention horizon: {exc}")
            previous = digest
            continue
        if (horizon.topic, horizon.partition) != (topic, partition) or horizon.key != key:
            add(
                "altered_horizon",
                key,
                f"this key holds the horizon of {horizon.topic}[{horizon.partition}] at offset "
                f"{horizon.first_offset:,}: horizon records were moved",
            )
        elif horizon.previous != previous:
            add(
                "altered_horizon",
                key,
                f"does not link to the retention horizon before it in {topic}[{partition}]: "
                "a horizon record was removed, replaced or forged",
            )
        found.append(StoredHorizon(key, horizon, digest))
        previous = digest
    return found


def current_horizons(store: ObjectStore) -> list[dict[str, Any]]:
    """The newest horizon of every chain that has one, as a digest signs them."""
    signed = []
    for key in newest_per_partition(store, HORIZON_PREFIX):
        data = store.get(key)
        horizon = Horizon.from_bytes(data)
        signed.append(
            {
                "topic": horizon.topic,
                "partition": horizon.partition,
                "key": key,
                "sha256": sha256_hex(data),
                "first_offset": horizon.first_offset,
            }
        )
    return signed


# -- what verify checks -----------------------------------------------------------------


def below(horizons: Sequence[StoredHorizon], last_offset: int) -> bool:
    """Whether a chain's newest horizon lies past ``last_offset`` (removed, or being removed)."""
    return bool(horizons) and last_offset < horizons[-1].first_offset


def start_problem(
    entry: ChainEntry, first: bool, current: StoredHorizon, name: str
) -> tuple[str, str, str] | None:
    """What is wrong (kind, key, detail), if anything, where a chain meets its newest horizon.

    ``first``: the chain's oldest remaining entry. Entries below the horizon are
    a removal in progress; the entry at the horizon must link to its record.
    """
    cut = current.first_offset
    if first and entry.first_offset > cut:
        return (
            "deleted_object",
            entry.entry_key,
            f"offsets {cut:,}-{entry.first_offset - 1:,} of {name} are missing: they were "
            f"removed past its retention horizon at offset {cut:,}",
        )
    if entry.first_offset == cut and entry.prev != current.horizon.last_removed_entry:
        return (
            "horizon_mismatch",
            current.key,
            f"says the entry before offset {cut:,} hashed to "
            f"{current.horizon.last_removed_entry[:16]}…, but the first kept entry of {name} "
            f"links to {str(entry.prev)[:16]}…: the horizon or the chain was forged",
        )
    return None


def missing_start(chain_entries: Sequence[str], current: StoredHorizon, name: str) -> str | None:
    """The detail when no entry starts at the horizon (it cuts an entry, or lies past the end)."""
    h = current.horizon
    if entry_key(h.topic, h.partition, h.first_offset) in chain_entries:
        return None
    return (
        f"no entry of {name} starts at its retention horizon, offset {h.first_offset:,}: the "
        "horizon was forged or the chain's entries were removed"
    )


def check_digests(
    digests: Sequence[Digest],
    horizons: Mapping[TP, Sequence[StoredHorizon]],
    now: datetime,
    add: AddProblem,
    required_days: int | None = None,
) -> int:
    """Signed horizons must be unchanged, and no removal early; returns the uncovered count.

    A horizon records the policy it applied, which whoever wrote it chose. With
    ``required_days`` (the retention the auditor requires, from outside the
    archive), a horizon under a shorter policy is ``early_removal`` too, and
    removals are judged by the longer of the two.
    """
    for chain in horizons.values():
        for s in chain:
            if required_days is not None and s.horizon.policy_days < required_days:
                add(
                    "early_removal",
                    s.key,
                    f"recorded under a {s.horizon.policy_days}-day policy, shorter than the "
                    f"{required_days} days required",
                )
    stored = {s.key: s.hash for chain in horizons.values() for s in chain}
    covered: dict[TP, int] = {}
    first_signed: dict[str, datetime] = {}
    for digest in digests:  # oldest first
        for signed in digest.body.get("horizons") or []:
            tp = (str(signed["topic"]), int(signed["partition"]))
            key, sha = str(signed["key"]), str(signed["sha256"])
            covered[tp] = max(covered.get(tp, -1), int(signed["first_offset"]))
            if stored.get(key) == sha:
                first_signed.setdefault(key, digest.time)
            elif key in stored:
                add("altered_horizon", key, f"differs from the horizon {digest.key} signed")
            else:
                add(
                    "altered_horizon",
                    key,
                    f"{digest.key} signed this retention horizon; it is gone from the archive",
                )
    cuts = {tp: [s.first_offset for s in chain] for tp, chain in horizons.items()}
    for digest in digests:
        for head in digest.heads:
            tp = (str(head["topic"]), int(head["partition"]))
            last_offset = int(head["last_offset"])
            # the first horizon past this head removed it
            at = bisect.bisect_right(cuts.get(tp, []), last_offset)
            if at == len(cuts.get(tp, [])):
                continue
            cut = horizons[tp][at]
            when = min(cut.horizon.created_at, first_signed.get(cut.key, now), now)
            policy = max(cut.horizon.policy_days, required_days or 0)
            limit = when - timedelta(days=policy)
            newest = datetime.fromtimestamp(int(head["last_timestamp"]) / 1000, UTC)
            if newest > limit:
                add(
                    "early_removal",
                    cut.key,
                    f"{digest.key} signed {tp[0]}[{tp[1]}] up to offset {last_offset:,} with a "
                    f"record from {iso(newest)}; this horizon removed it by {iso(when)}, inside "
                    f"a {policy}-day policy",
                )
    return sum(
        1 for tp, chain in horizons.items() for s in chain if s.first_offset > covered.get(tp, -1)
    )
