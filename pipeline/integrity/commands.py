"""``auditstream digest|verify|reconcile|replay|report``: the auditor's commands."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline import telemetry
from pipeline.errors import ConfigError
from pipeline.integrity import keys
from pipeline.integrity.digest import DigestSigner
from pipeline.integrity.reconcile import (
    ReconcileReport,
    classify,
    dead_letter_sources,
    default_horizon,
    enriched_hashes,
    raw_facts,
    records_in_window,
)
from pipeline.integrity.repeats import derived_topics
from pipeline.integrity.verify import TrustedKeys, VerifyReport, verify_archive
from pipeline.schemas import SchemaStore
from pipeline.settings import Settings
from pipeline.sinks.storage import ObjectStore, open_store

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    _register_digest(subparsers)
    _register_verify(subparsers)
    _register_reconcile(subparsers)
    _register_replay(subparsers)
    _register_report(subparsers)


def parse_time(text: str) -> datetime:
    """``2026-01-01``, ``2026-01-01T10:00``, ``…Z`` or with an offset; naive means UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- digest -----------------------------------------------------------------------------


def _register_digest(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "digest",
        help="sign digests over every chain head (the one signer), verify periodically",
        description="Every --interval-s (default integrity.digest_interval_s, hourly) sign a "
        "digest over every partition's chain head with the Ed25519 key, chained to the "
        "previous digest; run verify every integrity.verify_interval_s and export "
        "auditstream_verify_last_success_timestamp_seconds and "
        "auditstream_verify_failures_total. `digest keygen` makes a key pair.",
    )
    parser.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=["run", "keygen"],
        help="run: the signer (default); keygen: write a new key pair and print its fingerprint",
    )
    parser.add_argument("--once", action="store_true", help="sign one digest and exit")
    parser.add_argument(
        "--key",
        type=Path,
        help="the private key PEM (default: integrity.signing_key); keygen writes it",
    )
    parser.add_argument(
        "--public-key",
        type=Path,
        help="keygen: where to write the public key (default: the private key's path + .pub)",
    )
    parser.add_argument("--interval-s", type=float, help="seconds between digests")
    parser.add_argument("--verify-interval-s", type=float, help="seconds between verify runs")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics here")
    parser.set_defaults(func=run_digest)


def run_digest(args: argparse.Namespace, settings: Settings) -> int:
    private_path: Path = args.key or settings.integrity.signing_key
    if args.action == "keygen":
        public_path = args.public_key or private_path.with_name(private_path.name + ".pub")
        key = keys.generate(private_path, public_path)
        print(f"private key: {private_path} (keep it secret; only `auditstream digest` uses it)")
        print(f"public key:  {public_path} (give it to auditors)")
        print(f"fingerprint: SHA256:{keys.fingerprint(key.public_key())}")
        print(f"key id:      {keys.key_id(key.public_key())}")
        return 0
    key = keys.load_private_key(private_path)
    store = open_store(settings.archive)
    interval = args.interval_s or settings.integrity.digest_interval_s
    signer = DigestSigner(store, key, interval)
    if args.once:
        digest = signer.sign()
        print(
            f"{digest.key}: {len(digest.heads)} chain heads signed with key {digest.body['key_id']}"
        )
        return 0
    port = args.metrics_port if args.metrics_port is not None else settings.integrity.metrics_port
    telemetry.start_metrics_server(port)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_schedule(
            signer,
            TrustedKeys(public_keys=[key.public_key()]),
            interval,
            args.verify_interval_s or settings.integrity.verify_interval_s,
            stop,
        )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def periodic_verify(store: ObjectStore, trusted: TrustedKeys) -> VerifyReport | None:
    """One verify run, recorded in the DESIGN metrics; None when it could not finish."""
    try:
        report = verify_archive(store, trusted)
    except Exception:
        log.exception("digest: the periodic verify could not finish")
        telemetry.VERIFY_FAILURES.inc()
        return None
    if report.ok:
        telemetry.VERIFY_LAST_SUCCESS.set(time.time())
        log.info("digest: verify: %s", report.summary())
    else:
        telemetry.VERIFY_FAILURES.inc()
        log.error("digest: verify FAILED: %s\n%s", report.summary(), report.text())
    return report


def run_schedule(
    signer: DigestSigner,
    trusted: TrustedKeys,
    interval_s: float,
    verify_interval_s: float,
    stop: threading.Event,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Sign at once and then every ``interval_s``; verify every ``verify_interval_s``."""
    next_sign = next_verify = clock()
    while not stop.is_set():
        now = clock()
        if now >= next_sign:
            try:
                digest = signer.sign()
                log.info("digest: wrote %s over %d chain heads", digest.key, len(digest.heads))
                next_sign = now + interval_s
            except Exception as exc:  # the store may be down: try again soon
                log.error("digest: signing failed, retrying in 30 s: %s", exc)
                next_sign = now + min(30.0, interval_s)
        if now >= next_verify:
            periodic_verify(signer.store, trusted)
            next_verify = clock() + verify_interval_s
        stop.wait(max(0.0, min(next_sign, next_verify) - clock()))


# -- verify -----------------------------------------------------------------------------


def add_window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", type=parse_time, help="start (ISO, UTC)")
    parser.add_argument("--to", dest="end", type=parse_time, help="end (ISO, UTC)")


def add_trusted_keys(parser: argparse.ArgumentParser) -> None:
    """The keys the auditor brings (never one found beside the archive)."""
    parser.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a trusted public key (PEM); repeat for rotated keys",
    )
    parser.add_argument(
        "--fingerprint",
        action="append",
        default=[],
        metavar="F",
        help="a trusted key's fingerprint (SHA256:hex, as `digest keygen` prints)",
    )


def _register_verify(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="prove the archive is complete and unaltered, with the auditor's key",
        description="Recompute every object's SHA-256, walk every chain, check every digest's "
        "signature with the key you bring (never one found beside the archive), and prove "
        "offset continuity per partition. Records the enriched, alert and dead-letter topics "
        "repeat (at-least-once processing) are counted as information. Exit status 1 on any "
        "problem.",
    )
    add_trusted_keys(parser)
    add_window(parser)
    parser.add_argument(
        "--required-days",
        type=int,
        metavar="D",
        help="the archive retention you require: a retention horizon recorded under a shorter "
        "policy, or one that removed records younger than D days, is a problem",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run_verify)


def trusted_keys(public_keys: list[Path], fingerprints: list[str]) -> TrustedKeys:
    trusted = TrustedKeys(
        public_keys=[keys.load_public_key(p) for p in public_keys],
        fingerprints={keys.normalize_fingerprint(f) for f in fingerprints},
    )
    if not trusted.all_fingerprints():
        raise ConfigError(
            "verify needs the key you trust: --public-key FILE or --fingerprint F, from the "
            "archive's owner (never from beside the archive)"
        )
    return trusted


def run_verify(args: argparse.Namespace, settings: Settings) -> int:
    trusted = trusted_keys(args.public_key, args.fingerprint)
    store = open_store(settings.archive)
    report = verify_archive(
        store,
        trusted,
        start=args.start,
        end=args.end,
        derived=derived_topics(settings.topics),
        schemas=SchemaStore.load(settings.codec.schemas_dir),
        required_days=args.required_days,
    )
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(f"archive: {store.location}")
        print(report.text())
    return 0 if report.ok else 1


# -- reconcile --------------------------------------------------------------------------


def _register_reconcile(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="prove every raw record is indexed, dead-lettered or a duplicate",
        description="Walk the raw archive in the window (Kafka record time): each raw "
        "(partition, offset) must be indexed with the same content hash (beyond the search "
        "retention: in the enriched archive), dead-lettered by source offset, or a "
        "same-content duplicate of an earlier offset. Names every one that is not, and every "
        "indexed event with no raw source. Exit status 1 when anything is unaccounted for.",
    )
    add_window(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run_reconcile)


def reconcile_settings(
    settings: Settings, start: datetime | None, end: datetime | None
) -> ReconcileReport:
    """Reconcile the archive and OpenSearch that ``settings`` point at."""
    from opensearchpy import helpers

    from pipeline.sinks.opensearch import make_client

    store = open_store(settings.archive)
    schemas = SchemaStore.load(settings.codec.schemas_dir)
    topics = settings.topics
    wide_start = start - timedelta(days=1) if start else None
    wide_end = end + timedelta(days=1) if end else None
    raw = raw_facts(
        records_in_window(store, topics.input, start, end),
        schemas,
        settings.worker.max_future_skew_s,
    )
    dead = dead_letter_sources(
        records_in_window(store, topics.dead_letter, wide_start, wide_end), schemas, topics.input
    )
    enriched = enriched_hashes(
        records_in_window(store, topics.enriched, wide_start, wide_end), schemas
    )
    client = make_client(settings.opensearch)
    alias = settings.opensearch.events_index_prefix

    def indexed(ids: list[str]) -> dict[str, str]:
        if not client.indices.exists_alias(name=alias):
            return {}
        body = {"query": {"ids": {"values": ids}}, "_source": ["event.hash"], "size": len(ids)}
        hits = client.search(index=alias, body=body)["hits"]["hits"]
        return {h["_id"]: h["_source"]["event"]["hash"] for h in hits}

    def documents() -> Iterator[str]:
        if not client.indices.exists_alias(name=alias):
            return
        window: dict[str, str] = {}
        if start:
            window["gte"] = start.isoformat()
        if end:
            window["lte"] = end.isoformat()
        query = {"query": {"range": {"event.created": window}}} if window else None
        for hit in helpers.scan(client, index=alias, query=query, _source=False):
            yield str(hit["_id"])

    client.indices.refresh(index=f"{alias}*")
    return classify(
        raw,
        dead,
        indexed,
        enriched,
        default_horizon(settings.retention.events_days),
        documents(),
        topic=topics.input,
    )


def run_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    report = reconcile_settings(settings, args.start, args.end)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(report.summary())
        for finding in report.findings:
            print(f"  {finding}")
    return 0 if report.ok else 1


# -- replay -----------------------------------------------------------------------------


def _register_replay(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="rebuild OpenSearch documents from the enriched archive (idempotent)",
        description="Read the enriched and alert archives (first record per id) and write the "
        "events whose occurred_at is in the window with op_type=create and _id=event_id into the "
        "index their time selects, as the live sink does: running it twice changes nothing. "
        "Events older than the search retention go to <restore prefix>-YYYY.MM.DD (alias "
        "audit-restore by default), not to the live indices. Progress on stderr.",
    )
    add_window(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be written, write nothing"
    )
    parser.add_argument(
        "--restore-prefix",
        help="index prefix and alias for events beyond the search retention (default: the "
        "events prefix with 'events' replaced by 'restore', e.g. audit-restore)",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.integrity.replay import replay

    counts = replay(
        settings, args.start, args.end, dry_run=args.dry_run, restore=args.restore_prefix
    )
    if args.json:
        json.dump(counts.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(counts.summary(dry_run=args.dry_run))
        for index, n in sorted(counts.indices.items()):
            print(f"  {index}: {n:,}")
    return 1 if counts.errors or counts.undecodable else 0


# -- report -----------------------------------------------------------------------------


def _register_report(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="a self-contained HTML evidence report for auditors",
        description="Integrity status (verify with the key you bring), volume per day, top "
        "actors and resources, failed and denied access, privileged actions, alerts, and the "
        "controls the trail supports (PCI DSS 10.2/10.3/10.5, SOC 2 CC6/CC7), from the "
        "archive, as one HTML file with no script and no external resource.",
    )
    add_window(parser)
    parser.add_argument(
        "--out", type=Path, default=Path("auditstream-report.html"), help="the HTML file"
    )
    add_trusted_keys(parser)
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.integrity.report import collect, render

    trusted = (
        trusted_keys(args.public_key, args.fingerprint)
        if args.public_key or args.fingerprint
        else None
    )
    data, verify = collect(settings, args.start, args.end, trusted)
    args.out.write_text(render(data, verify, settings), encoding="utf-8")
    status = "not verified: no key given" if verify is None else verify.summary()
    print(
        f"{args.out}: {data.events:,} events, {data.failures:,} failed, {len(data.alerts):,} "
        f"alerts; integrity: {status}"
    )
    return 0 if verify is None or verify.ok else 1
