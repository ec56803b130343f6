"""``verify``: check an archive without trusting whoever runs it.

With only the auditor's public keys (or fingerprints), :func:`verify_archive`
recomputes every object's SHA-256, walks every partition's chain from offset 0
(or its recorded retention horizon), checks every digest's signature and the
chain of digests, and compares every signed chain head with what the archive
holds now. Each problem is named precisely (``Problem.kind``):

==========================  ===========================================================
``modified_object``         an object's bytes or header differ from its chain entry
``deleted_object``          a chained object, or a stretch of offsets, is missing
``inserted_object``         an object that no chain entry describes
``reordered_entries``       an entry sits under another object's key
``altered_entry``           an entry does not link to the one before it, or differs from
                            the one a digest signed
``deleted_newest_object``   a signed chain head is gone: the newest objects were deleted
``bad_chain_start``         a chain starts after offset 0 with no recorded horizon
``horizon_mismatch``        the first entry kept at a retention horizon does not link to the
                            entry the horizon says was removed last
``altered_horizon``         a retention horizon is unreadable, does not link to the one
                            before it, or differs from (or lost) the one a digest signed
``early_removal``           a horizon removed a chain head a digest signed with a record
                            younger than the horizon's policy (or ``--required-days``), or
                            was recorded under a policy shorter than ``--required-days``
``missing_digest``          a digest's predecessor is missing
``altered_digest``          a digest is malformed or its signature does not verify
``wrong_key``               a digest is signed by a key the auditor did not name
``forked_digests``          two digests claim the same predecessor
``missing_scheduled_digest`` the schedule says a digest should exist and none does
==========================  ===========================================================

Information, not problems: objects not yet covered by a digest, an object not
yet chained (a sink between writing it and its entry), broker-skipped offsets,
chains starting at a retention horizon (:mod:`pipeline.integrity.horizon`), horizons
not yet covered by a digest, entries below a horizon that retention has not finished
removing, and, given the derived topics, records repeated there by at-least-once
processing (:mod:`pipeline.integrity.repeats`).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pipeline.integrity import keys
from pipeline.integrity.chain import (
    CHAIN_PREFIX,
    RESERVED_PREFIXES,
    ChainEntry,
    entry_key,
    sha256_hex,
)
from pipeline.integrity.digest import Digest, list_digests
from pipeline.integrity.horizon import (
    HORIZON_PREFIX,
    StoredHorizon,
    below,
    check_digests,
    missing_start,
    read_horizons,
    start_problem,
)
from pipeline.integrity.repeats import DerivedKind, DerivedRepeats
from pipeline.schemas import SchemaStore, default_store
from pipeline.sinks.archive import ObjectInfo, read_info
from pipeline.sinks.storage import ObjectNotFound, ObjectStore

#: a scheduled digest is missing when the gap exceeds this many intervals
SCHEDULE_SLACK = 1.5
MS = 1000


@dataclass(frozen=True)
class Problem:
    kind: str
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.key}: {self.detail}"


@dataclass
class VerifyReport:
    digests_total: int = 0
    digests_valid: int = 0
    objects_total: int = 0
    objects_valid: int = 0
    bytes_checked: int = 0
    gaps: int = 0
    partitions: int = 0
    records: int = 0
    skipped_offsets: int = 0
    horizons: dict[str, int] = field(default_factory=dict)
    retention_horizons: dict[str, str] = field(default_factory=dict)  # chain -> its record
    uncovered_horizons: int = 0
    removal_in_progress: int = 0  # entries still below a horizon (an interrupted retention)
    uncovered_objects: int = 0
    pending_objects: list[str] = field(default_factory=list)
    repeats: DerivedRepeats = field(default_factory=DerivedRepeats)  # in derived topics
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, key: str, detail: str) -> None:
        if not any((p.kind, p.key) == (kind, key) for p in self.problems):
            self.problems.append(Problem(kind, key, detail))

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def summary(self) -> str:
        line = (
            f"{self.digests_valid:,}/{self.digests_total:,} digests valid, "
            f"{self.objects_valid:,}/{self.objects_total:,} objects valid, "
            f"{self.gaps:,} gap{'s' if self.gaps != 1 else ''}"
        )
        if self.repeats.total:  # information, not a problem
            line += f"; {self.repeats.total:,} repeated derived record(s), not a problem"
        return line

    def text(self) -> str:
        lines = [self.summary()]
        lines += [f"  PROBLEM {p}" for p in self.problems]
        info = [
            f"{self.partitions} partitions, {self.records:,} records, "
            f"{self.skipped_offsets:,} broker-skipped offsets",
        ]
        if self.uncovered_objects:
            info.append(f"{self.uncovered_objects:,} objects not yet covered by a digest")
        for key in self.pending_objects:
            info.append(f"{key} not yet chained (a sink may be writing its entry)")
        for chain, horizon in sorted(self.horizons.items()):
            recorded = self.retention_horizons.get(chain) or f"offset {horizon:,}"
            info.append(f"{chain} starts at its retention horizon, {recorded}")
        if self.uncovered_horizons:
            info.append(
                f"{self.uncovered_horizons:,} retention horizons not yet covered by a digest"
            )
        if self.removal_in_progress:
            info.append(
                f"{self.removal_in_progress:,} entries below a retention horizon not yet removed "
                "(an interrupted `retention apply --archive`; the next run completes it)"
            )
        info += self.repeats.lines()
        lines += [f"  info: {line}" for line in info]
        lines.append("OK" if self.ok else f"FAILED: {len(self.problems)} problem(s)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "digests": {"total": self.digests_total, "valid": self.digests_valid},
            "objects": {
                "total": self.objects_total,
                "valid": self.objects_valid,
                "bytes_checked": self.bytes_checked,
                "uncovered": self.uncovered_objects,
                "pending": self.pending_objects,
            },
            "gaps": self.gaps,
            "partitions": self.partitions,
            "records": self.records,
            "skipped_offsets": self.skipped_offsets,
            "horizons": self.horizons,
            "retention_horizons": {
                "records": self.retention_horizons,
                "uncovered": self.uncovered_horizons,
                "removal_in_progress": self.removal_in_progress,
            },
            "repeats": self.repeats.to_json(),
            "problems": [asdict(p) for p in self.problems],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class TrustedKeys:
    """The keys an auditor brought: public keys, or fingerprints of keys digests carry."""

    public_keys: list[Ed25519PublicKey] = field(default_factory=list)
    fingerprints: set[str] = field(default_factory=set)

    def all_fingerprints(self) -> set[str]:
        return self.fingerprints | {keys.fingerprint(k) for k in self.public_keys}

    def describe(self) -> str:
        return ", ".join(sorted(f[: keys.KEY_ID_HEX] for f in self.all_fingerprints()))


@dataclass
class _Chain:
    topic: str
    partition: int
    entries: list[str] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    horizon_keys: list[str] = field(default_factory=list)
    horizons: list[StoredHorizon] = field(default_factory=list)  # read before the walk


def _in_window(first_ms: int, last_ms: int, start: datetime | None, end: datetime | None) -> bool:
    if start is not None and last_ms < start.timestamp() * MS:
        return False
    return not (end is not None and first_ms > end.timestamp() * MS)


def verify_archive(
    store: ObjectStore,
    trusted: TrustedKeys,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
    derived: Mapping[str, DerivedKind] | None = None,
    schemas: SchemaStore | None = None,
    required_days: int | None = None,
) -> VerifyReport:
    """Verify ``store``; objects and digests outside ``[start, end]`` are walked, not hashed.

    ``derived`` (topic → kind, see :func:`~pipeline.integrity.repeats.derived_topics`)
    names the derived topics whose repeated records are counted, decoded with ``schemas``.
    """
    began = time.monotonic()
    report = VerifyReport()
    if derived:
        report.repeats = DerivedRepeats.for_topics(derived, schemas or default_store())
    now = now or datetime.now(UTC)
    chains = _collect(store)
    heads: dict[tuple[str, int], tuple[str, str, int]] = {}  # newest entry key, hash, last offset
    entry_hashes: dict[str, str] = {}
    for chain in chains.values():
        chain.horizons = read_horizons(
            store, chain.horizon_keys, chain.topic, chain.partition, report.add
        )
        _walk_chain(store, chain, report, start, end, heads, entry_hashes)
    report.partitions = len(chains)
    digests = _check_digests(store, trusted, report, start, end, now)
    _check_coverage(digests, chains, heads, entry_hashes, report)
    report.uncovered_horizons = check_digests(
        digests, {tp: c.horizons for tp, c in chains.items()}, now, report.add, required_days
    )
    report.seconds = time.monotonic() - began
    return report


def _collect(store: ObjectStore) -> dict[tuple[str, int], _Chain]:
    """Every chain entry and object, grouped by partition (one listing of the store)."""
    chains: dict[tuple[str, int], _Chain] = {}

    def chain(topic: str, part: str) -> _Chain | None:
        if not part.isdigit():
            return None
        tp = (topic, int(part))
        return chains.setdefault(tp, _Chain(topic, int(part)))

    for key in store.list(""):
        parts = key.split("/")
        if key.startswith(CHAIN_PREFIX) and len(parts) == 4 and key.endswith(".json"):
            found = chain(parts[1], parts[2])
            if found is not None:
                found.entries.append(key)
        elif key.startswith(HORIZON_PREFIX) and len(parts) == 4 and key.endswith(".json"):
            found = chain(parts[1], parts[2])
            if found is not None:
                found.horizon_keys.append(key)
        elif not key.startswith(RESERVED_PREFIXES) and len(parts) == 3 and key.endswith(".avro"):
            found = chain(parts[0], parts[1])
            if found is not None:
                found.objects.append(key)
    return chains


def _walk_chain(
    store: ObjectStore,
    chain: _Chain,
    report: VerifyReport,
    start: datetime | None,
    end: datetime | None,
    heads: dict[tuple[str, int], tuple[str, str, int]],
    entry_hashes: dict[str, str],
) -> None:
    name = f"{chain.topic}[{chain.partition}]"
    current = chain.horizons[-1] if chain.horizons else None  # the chain starts there
    objects = set(chain.objects)
    described: set[str] = set()
    prev: ChainEntry | None = None
    prev_hash: str | None = None
    last_offset = -1
    for index, key in enumerate(chain.entries):
        try:
            data = store.get(key)
        except ObjectNotFound:
            continue  # deleted between listing and reading: the gap shows it
        digest = sha256_hex(data)
        entry_hashes[key] = digest
        try:
            entry = ChainEntry.from_bytes(data)
        except ValueError as exc:
            report.add("altered_entry", key, f"unreadable chain entry: {exc}")
            prev, prev_hash = None, digest
            continue
        described.add(entry.key)
        expected_key = entry_key(chain.topic, chain.partition, entry.first_offset)
        if (entry.topic, entry.partition) != (chain.topic, chain.partition) or key != expected_key:
            report.add(
                "reordered_entries",
                key,
                f"this position holds the entry of {entry.key} (offsets "
                f"{entry.first_offset:,}-{entry.last_offset:,}): entries were moved or swapped",
            )
        elif index == 0 and current is not None:
            pass  # checked against its retention horizon below
        elif index == 0:
            if entry.prev is not None:
                report.add(
                    "deleted_object",
                    key,
                    f"the oldest entry of {name} links to an earlier entry that is gone: "
                    f"offsets before {entry.first_offset:,} were deleted",
                )
                report.gaps += 1
            elif entry.first_offset != 0 and entry.horizon != entry.first_offset:
                report.add(
                    "bad_chain_start",
                    key,
                    f"{name} starts at offset {entry.first_offset:,} without a recorded retention "
                    "horizon: its oldest objects were removed",
                )
                report.gaps += 1
            elif entry.first_offset != 0:
                report.horizons[name] = entry.first_offset
        elif prev is not None and entry.first_offset > prev.last_offset + 1:
            report.add(
                "deleted_object",
                key,
                f"offsets {prev.last_offset + 1:,}-{entry.first_offset - 1:,} of {name} are "
                "missing: their objects and chain entries were deleted",
            )
            report.gaps += 1
        elif entry.prev != prev_hash:
            report.add(
                "altered_entry",
                key,
                f"does not link to the entry before it in {name}: the chain was rewritten, "
                "reordered or an entry was forged",
            )
        elif prev is not None and entry.first_offset != prev.last_offset + 1:
            report.add(
                "altered_entry",
                key,
                f"overlaps the entry before it (starts at {entry.first_offset:,}, the previous "
                f"ends at {prev.last_offset:,})",
            )
        if current is not None and (index == 0 or entry.first_offset == current.first_offset):
            problem = start_problem(entry, index == 0, current, name)
            if problem is not None:
                report.add(*problem)
                report.gaps += problem[0] == "deleted_object"
        prev, prev_hash = entry, digest
        last_offset = max(last_offset, entry.last_offset)
        report.records += entry.count
        report.skipped_offsets += entry.skipped_offsets
        if below(chain.horizons, entry.last_offset):
            report.removal_in_progress += 1  # retention removes each object before its entry
            if entry.key not in objects:
                continue
        _check_object(store, entry, objects, report, start, end)
    if current is not None:
        missing = missing_start(chain.entries, current, name)
        if missing is not None:
            report.add("horizon_mismatch", current.key, missing)
        else:
            report.horizons[name] = current.first_offset
            report.retention_horizons[name] = current.describe()
    if prev_hash is not None and chain.entries:
        heads[(chain.topic, chain.partition)] = (chain.entries[-1], prev_hash, last_offset)
    _check_unchained(chain, described, last_offset, report)


def _check_object(
    store: ObjectStore,
    entry: ChainEntry,
    objects: set[str],
    report: VerifyReport,
    start: datetime | None,
    end: datetime | None,
) -> None:
    if not _in_window(entry.first_timestamp, entry.last_timestamp, start, end):
        return
    report.objects_total += 1
    if entry.key not in objects:
        report.add(
            "deleted_object",
            entry.key,
            f"chained (offsets {entry.first_offset:,}-{entry.last_offset:,}, "
            f"{entry.count:,} records) but missing from the archive",
        )
        return
    try:
        data = store.get(entry.key)
    except ObjectNotFound:
        report.add("deleted_object", entry.key, "listed but not readable")
        return
    report.bytes_checked += len(data)
    if sha256_hex(data) != entry.sha256:
        report.add(
            "modified_object",
            entry.key,
            f"SHA-256 {sha256_hex(data)[:16]}… differs from its chain entry's {entry.sha256[:16]}…",
        )
        return
    try:
        info: ObjectInfo | None = read_info(entry.key, data)
    except Exception:
        info = None
    facts = (entry.first_offset, entry.last_offset, entry.count, entry.skipped_offsets)
    if info is None or (
        (info.first_offset, info.last_offset, info.count, info.skipped_offsets) != facts
    ):
        report.add("modified_object", entry.key, "its header disagrees with its chain entry")
        return
    report.objects_valid += 1
    report.repeats.add(entry.topic, data)


def _check_unchained(
    chain: _Chain, described: set[str], last_offset: int, report: VerifyReport
) -> None:
    """Objects no entry describes: one right after the head is pending, others inserted."""
    loose = [k for k in chain.objects if k not in described]
    for key in loose:
        offset = int(key.rsplit("/", 1)[1].split(".")[0])
        if (
            key == loose[-1]
            and offset == last_offset + 1
            and key.encode() > max((k.encode() for k in described), default=b"")
        ):
            report.pending_objects.append(key)
            continue
        report.objects_total += 1
        report.add(
            "inserted_object",
            key,
            "no chain entry describes this object: it was inserted or forged",
        )


def _check_digests(
    store: ObjectStore,
    trusted: TrustedKeys,
    report: VerifyReport,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
) -> list[Digest]:
    """Every digest's signature and link; the valid ones, oldest first."""
    valid: list[Digest] = []
    parsed: list[Digest] = []
    fingerprints = trusted.all_fingerprints()
    by_fp = {keys.fingerprint(k): k for k in trusted.public_keys}
    for key in list_digests(store):
        data = store.get(key)
        try:
            digest = Digest.from_bytes(key, data)
        except ValueError as exc:
            report.add("altered_digest", key, str(exc))
            continue
        parsed.append(digest)
        in_window = (start is None or digest.time >= start) and (end is None or digest.time <= end)
        if in_window:
            report.digests_total += 1
        if _signature_ok(digest, fingerprints, by_fp, report) and in_window:
            report.digests_valid += 1
        if _signature_valid(digest, fingerprints, by_fp):
            valid.append(digest)
    _check_digest_links(parsed, report)
    _check_schedule(parsed, report, end, now)
    return valid


def _signature_valid(
    digest: Digest, fingerprints: set[str], by_fp: dict[str, Ed25519PublicKey]
) -> bool:
    try:
        embedded = keys.public_key_from_b64(str(digest.body["public_key"]))
    except (ValueError, binascii.Error):
        return False
    fp = keys.fingerprint(embedded)
    if fp not in fingerprints or digest.body["key_id"] != fp[: keys.KEY_ID_HEX]:
        return False
    key = by_fp.get(fp, embedded)
    return keys.verify_signature(key, digest.signature, digest.signed_bytes)


def _signature_ok(
    digest: Digest,
    fingerprints: set[str],
    by_fp: dict[str, Ed25519PublicKey],
    report: VerifyReport,
) -> bool:
    try:
        embedded = keys.public_key_from_b64(str(digest.body["public_key"]))
    except (ValueError, binascii.Error):
        report.add("altered_digest", digest.key, "its public key field is not an Ed25519 key")
        return False
    fp = keys.fingerprint(embedded)
    if fp not in fingerprints:
        report.add(
            "wrong_key",
            digest.key,
            f"signed with key id {digest.body.get('key_id')} (fingerprint {fp[:16]}…), not a "
            f"key you named ({', '.join(sorted(f[:16] for f in fingerprints)) or 'none'})",
        )
        return False
    if digest.body["key_id"] != fp[: keys.KEY_ID_HEX]:
        report.add("altered_digest", digest.key, "its key id does not match its key")
        return False
    if not keys.verify_signature(by_fp.get(fp, embedded), digest.signature, digest.signed_bytes):
        report.add("altered_digest", digest.key, "the signature does not verify: it was altered")
        return False
    return True


def _check_digest_links(digests: list[Digest], report: VerifyReport) -> None:
    keys_present = {d.key for d in digests}
    claimed: dict[str, str] = {}
    for index, digest in enumerate(digests):
        previous = digest.body.get("previous_digest")
        if previous is None:
            if index > 0:
                report.add(
                    "forked_digests",
                    digest.key,
                    "starts a new chain of digests although earlier digests exist",
                )
            continue
        if previous in claimed:
            report.add(
                "forked_digests",
                digest.key,
                f"chains to {previous}, as {claimed[previous]} does: two signers",
            )
        claimed[str(previous)] = digest.key
        if previous not in keys_present:
            report.add(
                "missing_digest",
                str(previous),
                f"{digest.key} chains to this digest, which is missing",
            )
            continue
        before = digests[index - 1] if index > 0 else None
        sig = digest.body.get("previous_signature")
        if before is None or before.key != previous:
            report.add("missing_digest", digest.key, f"chains to {previous}, out of order")
        elif sig != base64.b64encode(before.signature).decode():
            report.add(
                "altered_digest",
                str(previous),
                f"its signature differs from the one {digest.key} chained to",
            )


def _check_schedule(
    digests: list[Digest], report: VerifyReport, end: datetime | None, now: datetime
) -> None:
    times = [(d.key, d.time, float(d.body.get("interval_s") or 3600)) for d in digests]
    for (key_a, a, interval), (_, b, _) in itertools.pairwise(times):
        if (b - a).total_seconds() > interval * SCHEDULE_SLACK:
            report.add(
                "missing_scheduled_digest",
                key_a,
                f"no digest between {a:%Y-%m-%d %H:%M:%S}Z and {b:%Y-%m-%d %H:%M:%S}Z "
                f"(scheduled every {interval:.0f} s)",
            )
    if times:
        key, last, interval = times[-1]
        until = min(end, now) if end is not None else now
        if (until - last).total_seconds() > interval * SCHEDULE_SLACK:
            report.add(
                "missing_scheduled_digest",
                key,
                f"the newest digest is from {last:%Y-%m-%d %H:%M:%S}Z; one was due every "
                f"{interval:.0f} s (is `auditstream digest` running?)",
            )


def _check_coverage(
    digests: list[Digest],
    chains: dict[tuple[str, int], _Chain],
    heads: dict[tuple[str, int], tuple[str, str, int]],
    entry_hashes: dict[str, str],
    report: VerifyReport,
) -> None:
    """Every signed head must still be in its chain, unchanged; count what no digest covers."""
    if chains and not digests:
        report.add(
            "missing_digest",
            "_digest/",
            "no valid digest covers this archive: run `auditstream digest`",
        )
    covered: dict[tuple[str, int], int] = defaultdict(lambda: -1)
    for digest in reversed(digests):  # newest first: it decides what the newest objects were
        for head in digest.heads:
            tp = (str(head["topic"]), int(head["partition"]))
            signed_key, signed_hash = str(head["entry"]), str(head["entry_sha256"])
            newest = tp not in covered
            covered[tp] = max(covered[tp], int(head["last_offset"]))
            now_hash = entry_hashes.get(signed_key)
            removed = tp in chains and below(chains[tp].horizons, int(head["last_offset"]))
            if now_hash == signed_hash or (now_hash is None and (not newest or removed)):
                continue  # older heads that are gone show up as gaps in the chain walk; heads
                # below a retention horizon were removed by it (checked by check_digests)
            if now_hash is not None:
                report.add(
                    "altered_entry",
                    signed_key,
                    f"differs from the entry {digest.key} signed",
                )
                continue
            _, _, chain_end = heads.get(tp, ("", "", -1))
            if chain_end < int(head["last_offset"]):
                report.add(
                    "deleted_newest_object",
                    f"{tp[0]}/{tp[1]:05d}",
                    f"{digest.key} signed the chain up to offset {int(head['last_offset']):,}; "
                    f"it now ends at {chain_end:,}: the newest objects were deleted",
                )
                report.gaps += 1
            else:
                report.add(
                    "altered_entry",
                    signed_key,
                    f"the entry {digest.key} signed is gone from the chain",
                )
    for tp, chain in chains.items():
        for key in chain.entries:
            offset = int(key.rsplit("/", 1)[1].split(".")[0])
            if offset > covered[tp]:
                report.uncovered_objects += 1
