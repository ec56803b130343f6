"""The archive's cost, in-process: writing (objects, chain, claims) and verifying it.

``auditstream bench --archive N`` makes N access events with the simulator,
encoded as the producer SDK sends them (Avro single-object, keyed by actor id),
as the records of one input partition with log-append timestamps. Then, for
each codec (deflate, zstandard):

1. **archive**: the records through :class:`~pipeline.sinks.archive.ArchiveSink`,
   the sink's own code path: one object per ``sink.archive_max_records`` records,
   claimed by conditional create (temp file, fsync, ``link``; ``If-None-Match``
   on S3), then its chain entry claimed the same way.
   Baseline: the same records with the same codec, level and block size written
   by a bare fastavro container writer, one file per object (no claim, no
   fsync, no hash, no chain).
2. **verify**: the real :func:`~pipeline.integrity.verify.verify_archive` over
   that archive, a digest signed first (not timed). Baseline: bare SHA-256 of
   the same objects' bytes, read from the store (the page cache, for files
   just written).

Printed beside each baseline: records/s and MB/s written, the compression
ratio (the same records without compression, against the objects), objects/s
and MB/s verified; then the RSS with the records in memory, and the peak. Each
figure is the fastest of three rounds, a baseline and its measurement taken
in turn, as the machine may be shared.

The filesystem archive lives in a temporary directory, removed after. With
``--archive-store s3`` the archive is a new bucket on the settings' S3
endpoint (the local stack's when none is set) with Object Lock in GOVERNANCE
mode for one day, so that the bench can remove it again.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro

from pipeline.bench.common import peak_rss_mb, rss_mb, say
from pipeline.errors import AuditstreamError, ConfigError, ServiceUnavailable
from pipeline.settings import Settings
from pipeline.sinks.archive import (
    CODEC_LEVELS,
    SYNC_INTERVAL,
    ArchiveSink,
    partition_prefix,
    raw_record_schema,
    to_raw,
)
from pipeline.sinks.base import Batch, Record
from pipeline.sinks.storage import FilesystemStore, ObjectStore

CODECS = ("deflate", "zstandard")
ROUNDS = 3  # each figure the fastest of these (the machine is shared)
MB = 1e6


# -- results (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """``count`` things (records or objects) and ``size`` bytes in ``seconds``."""

    seconds: float
    count: int
    size: int

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_s(self) -> float:
        return self.size / MB / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class CodecResult:
    codec: str
    objects: int
    uncompressed: int  # the same objects' records without compression (codec null), bytes
    archive: Timed  # records, object bytes written
    bare_write: Timed  # records, file bytes written
    verify: Timed  # objects, object bytes checked
    bare_hash: Timed  # objects, object bytes hashed

    @property
    def ratio(self) -> float:
        return self.uncompressed / self.archive.size if self.archive.size else 0.0


@dataclass
class ArchiveBench:
    records: int
    payload: int  # bytes of keys and values
    batch: int
    store: str
    rounds: int = 1
    rss_with_records_mb: float = 0.0
    peak_rss_mb: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after
    results: list[CodecResult] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # codec → why it was not measured

    def to_json(self) -> dict[str, Any]:
        def timed(t: Timed) -> dict[str, float]:
            return {"seconds": round(t.seconds, 4), "per_s": round(t.per_s, 1), "mb_s": t.mb_s}

        return {
            "records": self.records,
            "payload_bytes": self.payload,
            "records_per_object": self.batch,
            "store": self.store,
            "rounds": self.rounds,
            "rss_with_records_mb": round(self.rss_with_records_mb, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "load_average": list(self.load),
            "codecs": {
                r.codec: {
                    "level": CODEC_LEVELS[r.codec],
                    "objects": r.objects,
                    "bytes_written": r.archive.size,
                    "uncompressed_bytes": r.uncompressed,
                    "ratio": round(r.ratio, 3),
                    "archive": timed(r.archive),
                    "bare_fastavro_write": timed(r.bare_write),
                    "verify": timed(r.verify),
                    "bare_sha256": timed(r.bare_hash),
                }
                for r in self.results
            },
            "not_measured": self.missing,
        }


def _versus(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x the baseline" if baseline > 0 else "no baseline"


def format_report(bench: ArchiveBench) -> str:
    lines = [
        f"archive: {bench.records:,} simulated access events ({bench.payload / MB:.1f} MB of "
        f"keys and values), one partition, {bench.batch:,} records per object; {bench.store}; "
        f"each figure the fastest of {bench.rounds} round{'s' if bench.rounds != 1 else ''}"
    ]
    for r in bench.results:
        lines += [
            f"  {r.codec} (level {CODEC_LEVELS[r.codec]}): {r.objects:,} objects, "
            f"{r.archive.size / MB:.1f} MB written, compression ratio {r.ratio:.2f} "
            f"({r.uncompressed / MB:.1f} MB uncompressed)",
            f"    archive  {r.archive.per_s:>12,.0f} records/s {r.archive.mb_s:>8.2f} MB/s   "
            f"bare fastavro writer {r.bare_write.per_s:>10,.0f} records/s "
            f"{r.bare_write.mb_s:>8.2f} MB/s   ({_versus(r.archive.per_s, r.bare_write.per_s)})",
            f"    verify   {r.verify.per_s:>12,.1f} objects/s {r.verify.mb_s:>8.1f} MB/s   "
            f"bare SHA-256         {r.bare_hash.per_s:>10,.1f} objects/s "
            f"{r.bare_hash.mb_s:>8.1f} MB/s   ({_versus(r.verify.mb_s, r.bare_hash.mb_s)})",
        ]
    for codec, why in bench.missing.items():
        lines.append(f"  {codec}: not measured: {why}")
    lines.append(
        f"  RSS {bench.rss_with_records_mb:.0f} MB with the records in memory; "
        f"peak {bench.peak_rss_mb:.0f} MB; load average {bench.load[0]:.2f} before, "
        f"{bench.load[1]:.2f} after ({os.cpu_count()} CPUs, shared)"
    )
    return "\n".join(lines)


# -- measuring ------------------------------------------------------------------------------------


def make_records(n: int, topic: str, seed: int) -> list[Record]:
    """N simulated events as one partition's records, encoded as the producer SDK does."""
    from pipeline.codec import Encoding, encode
    from pipeline.schemas import ACCESS_EVENT, default_store
    from pipeline.simulate import Simulator

    schema = default_store().latest(ACCESS_EVENT)
    now = datetime.now(UTC)
    records = []
    for offset, (_, event) in enumerate(
        Simulator(seed).events(count=n, rate=1e4, start=now, speed=1)
    ):
        received = int(event["occurred_at"].timestamp() * 1000) + 40
        value = encode(event, schema, Encoding.SINGLE_OBJECT)
        key = str(event["actor"]["id"]).encode()
        records.append(Record(topic, 0, offset, 2, received, key, value))
    return records


def chunks(records: Sequence[Record], size: int) -> Iterator[Sequence[Record]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def codec_missing(codec: str) -> str | None:
    """Why fastavro cannot write ``codec`` here, or None when it can."""
    try:
        fastavro.writer(io.BytesIO(), {"type": "null"}, [None], codec=codec)
    except ValueError as exc:
        return f"{exc} (pip install 'auditstream[zstd]')"
    return None


def container_bytes(records: Sequence[Record], codec: str, schema: dict[str, Any]) -> int:
    buf = io.BytesIO()
    level = CODEC_LEVELS.get(codec)
    fastavro.writer(
        buf,
        schema,
        (to_raw(r) for r in records),
        codec=codec,
        sync_interval=SYNC_INTERVAL,
        codec_compression_level=level,
    )
    return buf.tell()


def bare_write(records: Sequence[Record], batch: int, codec: str, directory: Path) -> Timed:
    """Baseline: the records through a bare fastavro writer, one file per object."""
    schema = raw_record_schema()
    directory.mkdir(parents=True)
    size = 0
    began = time.perf_counter()
    for n, chunk in enumerate(chunks(records, batch)):
        path = directory / f"{n:06d}.avro"
        with path.open("wb") as fh:
            fastavro.writer(
                fh,
                schema,
                (to_raw(r) for r in chunk),
                codec=codec,
                sync_interval=SYNC_INTERVAL,
                codec_compression_level=CODEC_LEVELS[codec],
            )
            size += fh.tell()
    return Timed(time.perf_counter() - began, len(records), size)


def archive_write(store: ObjectStore, records: Sequence[Record], batch: int, codec: str) -> Timed:
    """The records through the archive sink: objects, claims and chain entries."""
    sink = ArchiveSink(store, codec=codec)
    tp = (records[0].topic, records[0].partition)
    sink.open([tp])
    began = time.perf_counter()
    for chunk in chunks(records, batch):
        written = Batch(records=list(chunk), attempts=1)
        sink.write(written)
        if len(written.settled) != len(chunk):
            raise AuditstreamError(
                "the archive sink left records of a fresh batch unwritten: a bug; the figures "
                "would be wrong, so none are printed"
            )
    seconds = time.perf_counter() - began
    size = sum(len(store.get(k)) for k in store.list(partition_prefix(*tp)))
    return Timed(seconds, len(records), size)


def verify_timed(store: ObjectStore, settings: Settings) -> Timed:
    """The real verify over the archive (a digest signed first, not timed)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from pipeline.integrity.digest import DigestSigner
    from pipeline.integrity.repeats import derived_topics
    from pipeline.integrity.verify import TrustedKeys, verify_archive

    key = Ed25519PrivateKey.generate()
    DigestSigner(store, key, 3600).sign()
    began = time.perf_counter()
    report = verify_archive(
        store, TrustedKeys(public_keys=[key.public_key()]), derived=derived_topics(settings.topics)
    )
    seconds = time.perf_counter() - began
    if not report.ok:
        raise AuditstreamError(
            f"verify found problems in the archive the bench just wrote (a bug; no figures "
            f"are printed):\n{report.text()}"
        )
    return Timed(seconds, report.objects_valid, report.bytes_checked)


def bare_hash(store: ObjectStore, prefix: str) -> Timed:
    """Baseline: SHA-256 of every object's bytes, read from the store."""
    keys = store.list(prefix)
    size = 0
    began = time.perf_counter()
    for key in keys:
        data = store.get(key)
        hashlib.sha256(data).hexdigest()
        size += len(data)
    return Timed(time.perf_counter() - began, len(keys), size)


# -- stores ---------------------------------------------------------------------------------------


@contextmanager
def filesystem_store(work: Path, name: str) -> Iterator[ObjectStore]:
    root = work / f"archive-{name}"
    try:
        yield FilesystemStore(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def s3_store_factory(settings: Settings) -> Callable[[Path, str], Any]:
    """Stores in fresh buckets on the settings' S3 endpoint (or the local stack's)."""
    from pipeline.sinks.storage.s3 import S3Store

    archive = settings.archive
    if archive.s3_endpoint is None:
        from pipeline.stack.manager import local_client_settings

        archive = local_client_settings(settings).archive

    @contextmanager
    def make(work: Path, name: str) -> Iterator[ObjectStore]:
        bucket = f"auditstream-bench-{name[:6]}-{secrets.token_hex(4)}"
        conf = archive.model_copy(
            update={"s3_bucket": bucket, "lock_mode": "GOVERNANCE", "lock_days": 1}
        )
        store = S3Store.from_settings(conf)
        try:
            store.client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        except Exception as exc:
            raise ServiceUnavailable(
                f"S3 at {archive.s3_endpoint} refused or did not answer ({exc}); is "
                "`auditstream stack up` running, or are archive.s3_endpoint and its keys set?"
            ) from exc
        try:
            yield store
        finally:
            _remove_bucket(store.client, bucket)

    return make


def _remove_bucket(client: Any, bucket: str) -> None:
    try:
        pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                client.delete_object(
                    Bucket=bucket,
                    Key=item["Key"],
                    VersionId=item["VersionId"],
                    BypassGovernanceRetention=True,
                )
        client.delete_bucket(Bucket=bucket)
    except Exception as exc:  # the figures stand; say what is left behind
        say(f"could not remove the bench bucket {bucket} (locked one day, GOVERNANCE): {exc}")


# -- the command ----------------------------------------------------------------------------------


def fastest(a: Timed | None, b: Timed) -> Timed:
    return b if a is None or b.seconds < a.seconds else a


def measure(
    n: int, settings: Settings, store_kind: str, batch: int | None = None, rounds: int = ROUNDS
) -> ArchiveBench:
    """Each figure the fastest of ``rounds``, a baseline and its measurement taken in turn."""
    batch = batch or settings.sink.archive_max_records
    if n < 1 or batch < 1 or rounds < 1:
        raise ConfigError(
            f"--archive N needs N ≥ 1, records per object ≥ 1 and rounds ≥ 1, not {n}, "
            f"{batch}, {rounds}"
        )
    make_store = s3_store_factory(settings) if store_kind == "s3" else filesystem_store
    say(f"archive bench: simulating {n:,} access events …")
    records = make_records(n, settings.topics.input, seed=secrets.randbits(32))
    payload = sum(len(r.key or b"") + len(r.value or b"") for r in records)
    work = Path(tempfile.mkdtemp(prefix="auditstream-bench-archive-", dir="/var/tmp"))
    where = (
        f"S3 at {settings.archive.s3_endpoint or 'the local stack'}, a new bucket per codec "
        "with Object Lock (GOVERNANCE, 1 day)"
        if store_kind == "s3"
        else f"filesystem, a temporary directory in {work.parent} (fsync on)"
    )
    bench = ArchiveBench(n, payload, batch, where, rounds, rss_with_records_mb=rss_mb())
    schema = raw_record_schema()
    uncompressed = sum(container_bytes(c, "null", schema) for c in chunks(records, batch))
    load_before = os.getloadavg()[0]
    try:
        for codec in CODECS:
            why = codec_missing(codec)
            if why is not None:
                bench.missing[codec] = why
                continue
            baseline = written = verified = hashed = None
            for round_ in range(1, rounds + 1):
                say(f"  {codec}, round {round_}/{rounds}: bare write, archive, bare hash, verify …")
                bare_dir = work / f"bare-{codec}"
                baseline = fastest(baseline, bare_write(records, batch, codec, bare_dir))
                shutil.rmtree(bare_dir)
                with make_store(work, f"{codec}-{round_}") as store:
                    written = fastest(written, archive_write(store, records, batch, codec))
                    prefix = partition_prefix(settings.topics.input, 0)
                    hashed = fastest(hashed, bare_hash(store, prefix))
                    verified = fastest(verified, verify_timed(store, settings))
            assert baseline and written and verified and hashed
            objects = -(-n // batch)
            bench.results.append(
                CodecResult(codec, objects, uncompressed, written, baseline, verified, hashed)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bench.peak_rss_mb = peak_rss_mb()
    bench.load = (load_before, os.getloadavg()[0])
    return bench


def run(args: argparse.Namespace, settings: Settings) -> int:
    bench = measure(args.archive, settings, args.archive_store, args.archive_batch)
    print(format_report(bench))
    if args.json:
        import json

        print(json.dumps(bench.to_json(), indent=2))
    return 0
