"""``auditstream retention apply``: delete the indices whose whole period lies outside retention.

DESIGN, Indices and retention: an event's own time picks its index
(``<events prefix>-YYYY.MM.DD`` or ``-YYYY.MM``, alerts ``<alerts prefix>-YYYY.MM``),
so retention is a matter of index names, done with core APIs on any OpenSearch:

- an index is deleted only when its whole period ends at or before the cutoff
  (``now - retention days``) *and* its newest document is older than the cutoff,
  so no index that may hold an in-window document is ever deleted;
- ``replay``'s restore indices (``<restore prefix>-<date>``, see
  :func:`~pipeline.integrity.replay.restore_prefix`) hold events older than the
  search retention by construction, so their window runs from the restore, not
  from the events' time: one is deleted only when it was created, and its newest
  document restored (``event.ingested``), before ``now - retention.restore_days``;
- before a delete, the archive must already hold the index's documents
  (:func:`archive_holds`); otherwise the delete is refused and the command
  exits 1;
- names that are not exactly ``<prefix>-<date>`` are never touched.

``--archive`` then applies the archive's own retention
(:mod:`pipeline.retention_archive`). ``--ism`` installs the shipped Index State
Management policies instead, for clusters that have the plugin
(:mod:`pipeline.retention_ism`, ``deploy/opensearch/ism/``).
"""

from __future__ import annotations

import argparse
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, TopicPartition
from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc

from pipeline.errors import AuditstreamError, ConfigError, TransportError
from pipeline.integrity.replay import restore_prefix
from pipeline.retention_archive import apply_archive
from pipeline.settings import Settings
from pipeline.sinks.archive import archive_head
from pipeline.sinks.opensearch import make_client
from pipeline.sinks.storage import ObjectStore, open_store

log = logging.getLogger(__name__)

Kind = Literal["events", "alerts", "restore"]
_DATE_SUFFIX = r"(?P<y>\d{4})\.(?P<m>\d{2})(?:\.(?P<d>\d{2}))?"


class RetentionError(AuditstreamError):
    """Retention could not be applied (a refused delete, an unreachable archive …)."""


# -- index periods --------------------------------------------------------------


@dataclass(frozen=True)
class IndexPeriod:
    """An index and the time its name covers: ``[start, end)`` in UTC."""

    index: str
    kind: Kind
    start: datetime
    end: datetime


def parse_index(name: str, prefix: str, kind: Kind) -> IndexPeriod | None:
    """The period of ``<prefix>-YYYY.MM.DD`` or ``<prefix>-YYYY.MM``; None for any other name."""
    match = re.fullmatch(re.escape(prefix) + "-" + _DATE_SUFFIX, name)
    if match is None:
        return None
    year, month = int(match["y"]), int(match["m"])
    try:
        if match["d"] is not None:
            start = datetime(year, month, int(match["d"]), tzinfo=UTC)
            end = start + timedelta(days=1)
        else:
            start = datetime(year, month, 1, tzinfo=UTC)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    except ValueError:
        return None  # e.g. 2025.02.30: not one of ours
    return IndexPeriod(name, kind, start, end)


def cutoff(now: datetime, days: int) -> datetime:
    """Documents at or after this instant are inside the retention window."""
    return now - timedelta(days=days)


def period_expired(period: IndexPeriod, now: datetime, days: int) -> bool:
    """True when every instant of the period lies before the window."""
    return period.end <= cutoff(now, days)


# -- the archive check ------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveCheck:
    """Whether the archive holds an index's documents, and why not when it does not."""

    ok: bool
    detail: str


def archive_holds(
    client: OpenSearch,
    period: IndexPeriod,
    store: ObjectStore,
    settings: Settings,
    *,
    kafka_offsets: Callable[[str, int], dict[int, int]] | None = None,
) -> ArchiveCheck:
    """Does the archive already hold every document of this index?

    Today's evidence is the archive objects' own metadata (contiguous offset
    ranges per partition; the hash chains of ``pipeline.integrity`` can make
    this stronger here, in one place):

    - events and restored events: every document names the raw input record it
      came from (``auditstream.kafka.topic/partition/offset``); per partition the
      raw archive's head must reach the highest such offset (records the
      archive's own retention removed since were archived all the same);
    - alerts: per partition of the alerts topic, the archive must hold every
      record written before the index's newest ``event.ingested`` (looked up
      with Kafka's offsets-for-times).
    """
    if period.kind in ("events", "restore"):
        return _events_archived(client, period.index, store)
    newest = _max(client, period.index, "event.ingested")
    if newest is None:
        return ArchiveCheck(True, "no documents")
    # Records after the newest write cannot be in the index; a margin covers clock skew.
    until_ms = int(newest.timestamp() * 1000) + int(settings.worker.max_future_skew_s * 1000)
    lookup = kafka_offsets or (lambda t, ms: kafka_offsets_before(settings, t, ms))
    needed = lookup(settings.topics.alerts, until_ms)
    return _covers(store, settings.topics.alerts, needed)


def _events_archived(client: OpenSearch, index: str, store: ObjectStore) -> ArchiveCheck:
    missing = _count(
        client, index, {"bool": {"must_not": {"exists": {"field": "auditstream.kafka.offset"}}}}
    )
    if missing:
        return ArchiveCheck(False, f"{missing} documents do not name their raw record")
    needed: dict[tuple[str, int], int] = {}
    for bucket in _composite_max(client, index):
        key = bucket["key"]
        needed[(str(key["topic"]), int(key["partition"]))] = int(bucket["max_offset"]["value"])
    problems = []
    for (topic, partition), offset in sorted(needed.items()):
        head = archive_head(store, topic, partition)
        if head is None or head.last_offset < offset:
            have = "nothing" if head is None else f"up to offset {head.last_offset}"
            problems.append(f"{topic}[{partition}] needs offset {offset}, archive holds {have}")
    if problems:
        return ArchiveCheck(False, "; ".join(problems))
    return ArchiveCheck(True, f"raw archive covers {len(needed)} partitions")


def _covers(store: ObjectStore, topic: str, needed: dict[int, int]) -> ArchiveCheck:
    """Every offset below ``needed[partition]`` must be archived."""
    problems = []
    for partition, end in sorted(needed.items()):
        head = archive_head(store, topic, partition)
        archived_end = 0 if head is None else head.last_offset + 1
        if archived_end < end:
            problems.append(f"{topic}[{partition}] archived below {archived_end}, needs {end}")
    if problems:
        return ArchiveCheck(False, "; ".join(problems))
    return ArchiveCheck(True, f"{topic} archive covers {len(needed)} partitions")


def kafka_offsets_before(settings: Settings, topic: str, until_ms: int) -> dict[int, int]:
    """Per partition, the first offset written at or after ``until_ms`` (or the end offset)."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"auditstream-retention-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise RetentionError(
                f"topic {topic} is not on Kafka at {settings.kafka.bootstrap_servers}: cannot "
                "prove the archive holds the alerts"
            )
        wanted = [TopicPartition(topic, p, until_ms) for p in sorted(meta.partitions)]
        found = consumer.offsets_for_times(wanted, timeout=30)
        result = {}
        for tp in found:
            if tp.offset >= 0:
                result[tp.partition] = tp.offset
            else:
                result[tp.partition] = consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=30
                )[1]
        return result
    except KafkaException as exc:
        raise TransportError(
            f"Kafka at {settings.kafka.bootstrap_servers}: offsets of {topic}: {exc}"
        ) from exc
    finally:
        consumer.close()


# -- OpenSearch helpers -----------------------------------------------------------


def _search(client: OpenSearch, index: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        result: dict[str, Any] = client.search(index=index, body=body)
    except os_exc.ConnectionError as exc:
        raise TransportError(f"OpenSearch: searching {index}: {exc}") from exc
    except os_exc.TransportError as exc:
        raise RetentionError(f"OpenSearch refused a search of {index}: {exc.error}") from exc
    return result


def _count(client: OpenSearch, index: str, query: dict[str, Any] | None = None) -> int:
    body: dict[str, Any] = {"size": 0, "track_total_hits": True}
    if query is not None:
        body["query"] = query
    return int(_search(client, index, body)["hits"]["total"]["value"])


def _max(client: OpenSearch, index: str, field: str) -> datetime | None:
    body = {"size": 0, "aggs": {"newest": {"max": {"field": field}}}}
    value = _search(client, index, body)["aggregations"]["newest"]["value"]
    if value is None:
        return None
    return datetime.fromtimestamp(float(value) / 1000, tz=UTC)


def _composite_max(client: OpenSearch, index: str) -> Iterator[dict[str, Any]]:
    after: dict[str, Any] | None = None
    while True:
        composite: dict[str, Any] = {
            "size": 1000,
            "sources": [
                {"topic": {"terms": {"field": "auditstream.kafka.topic"}}},
                {"partition": {"terms": {"field": "auditstream.kafka.partition"}}},
            ],
        }
        if after is not None:
            composite["after"] = after
        body = {
            "size": 0,
            "aggs": {
                "tp": {
                    "composite": composite,
                    "aggs": {"max_offset": {"max": {"field": "auditstream.kafka.offset"}}},
                }
            },
        }
        agg = _search(client, index, body)["aggregations"]["tp"]
        yield from agg["buckets"]
        after = agg.get("after_key")
        if not agg["buckets"] or after is None:
            return


def list_indices(client: OpenSearch, prefix: str) -> dict[str, datetime]:
    """The open indices ``<prefix>-*`` and when each was created, by name."""
    try:
        found = client.indices.get(index=f"{prefix}-*", params={"expand_wildcards": "open"})
    except os_exc.NotFoundError:
        return {}
    except os_exc.ConnectionError as exc:
        raise TransportError(f"OpenSearch: listing {prefix}-*: {exc}") from exc
    return {
        name: datetime.fromtimestamp(
            int(found[name]["settings"]["index"]["creation_date"]) / 1000, UTC
        )
        for name in sorted(found)
    }


# -- the plan -------------------------------------------------------------------

Action = Literal["delete", "keep", "refuse"]


@dataclass(frozen=True)
class Decision:
    period: IndexPeriod
    action: Action
    reason: str


def plan(
    client: OpenSearch,
    settings: Settings,
    store: ObjectStore,
    now: datetime,
    *,
    kafka_offsets: Callable[[str, int], dict[int, int]] | None = None,
) -> list[Decision]:
    """What ``apply`` would do with each of the pipeline's indices, oldest first."""
    decisions = []
    for kind, prefix, days in (
        ("events", settings.opensearch.events_index_prefix, settings.retention.events_days),
        ("alerts", settings.opensearch.alerts_index_prefix, settings.retention.alerts_days),
    ):
        limit = cutoff(now, days)
        for name in list_indices(client, prefix):
            period = parse_index(name, prefix, kind)  # type: ignore[arg-type]
            if period is None:
                continue  # another prefix's index (e.g. audit-events-t1-…) or not ours
            if not period_expired(period, now, days):
                decisions.append(
                    Decision(period, "keep", f"period ends {_day(period.end)}, window {days} d")
                )
                continue
            newest = _max(client, name, "@timestamp")
            if newest is not None and newest >= limit:
                decisions.append(
                    Decision(period, "keep", f"holds a document from {newest.isoformat()}")
                )
                continue
            check = archive_holds(client, period, store, settings, kafka_offsets=kafka_offsets)
            decisions.append(Decision(period, "delete" if check.ok else "refuse", check.detail))
    decisions += _plan_restore(client, settings, store, now)
    return sorted(decisions, key=lambda d: (d.period.kind, d.period.start))


def _plan_restore(
    client: OpenSearch, settings: Settings, store: ObjectStore, now: datetime
) -> list[Decision]:
    """The restore indices: kept ``restore_days`` after their creation and their last restore."""
    prefix = restore_prefix(settings.opensearch.events_index_prefix)
    days = settings.retention.restore_days
    limit = cutoff(now, days)
    decisions = []
    for name, created in list_indices(client, prefix).items():
        period = parse_index(name, prefix, "restore")
        if period is None:
            continue
        if created >= limit:
            reason = f"created {created.isoformat()}, window {days} d from the restore"
            decisions.append(Decision(period, "keep", reason))
            continue
        newest = _max(client, name, "event.ingested")
        if newest is not None and newest >= limit:
            reason = f"a document was restored {newest.isoformat()}, window {days} d"
            decisions.append(Decision(period, "keep", reason))
            continue
        check = archive_holds(client, period, store, settings)
        decisions.append(Decision(period, "delete" if check.ok else "refuse", check.detail))
    return decisions


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%d")


def apply(
    client: OpenSearch,
    settings: Settings,
    store: ObjectStore,
    now: datetime,
    *,
    dry_run: bool,
    out: Callable[[str], None] = print,
    kafka_offsets: Callable[[str, int], dict[int, int]] | None = None,
) -> list[Decision]:
    """Carry out :func:`plan` (or only print it); returns the decisions."""
    decisions = plan(client, settings, store, now, kafka_offsets=kafka_offsets)
    for decision in decisions:
        period = decision.period
        span = f"{_day(period.start)}..{_day(period.end - timedelta(seconds=1))}"
        if decision.action == "delete":
            verb = "would delete" if dry_run else "deleted"
            if not dry_run:
                _delete(client, period.index)
        else:
            verb = {"keep": "keep", "refuse": "REFUSED delete of"}[decision.action]
        out(f"{verb} {period.index} ({period.kind} {span}): {decision.reason}")
    deleted = sum(d.action == "delete" for d in decisions)
    refused = sum(d.action == "refuse" for d in decisions)
    out(
        f"{'dry run: ' if dry_run else ''}{deleted} {'to delete' if dry_run else 'deleted'}, "
        f"{refused} refused (archive does not hold them), "
        f"{len(decisions) - deleted - refused} kept; cutoff events "
        f"{cutoff(now, settings.retention.events_days).isoformat()}, alerts "
        f"{cutoff(now, settings.retention.alerts_days).isoformat()}, restores (by restore time) "
        f"{cutoff(now, settings.retention.restore_days).isoformat()}"
    )
    return decisions


def _delete(client: OpenSearch, index: str) -> None:
    try:
        client.indices.delete(index=index, params={"expand_wildcards": "none"})
    except os_exc.ConnectionError as exc:
        raise TransportError(f"OpenSearch: deleting {index}: {exc}") from exc
    except os_exc.TransportError as exc:
        raise RetentionError(f"OpenSearch refused to delete {index}: {exc.error}") from exc
    log.info("retention: deleted %s", index)


# -- the command ------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "retention",
        help="delete indices whose whole period lies outside retention",
        description="Apply the retention policy (settings: retention.events_days, alerts_days, "
        "restore_days, archive_days) with core OpenSearch APIs, or install the equivalent ISM "
        "policy.",
    )
    which = parser.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    apply_parser = which.add_parser(
        "apply",
        help="delete expired indices whose events the archive holds",
        description="Delete each index whose whole period (from its name) lies outside the "
        "retention window, after checking the archive holds its documents.",
    )
    apply_parser.add_argument("--dry-run", action="store_true", help="print, change nothing")
    apply_parser.add_argument(
        "--archive",
        action="store_true",
        help="also remove the oldest archive objects whose lock and policy have both expired "
        "(recording each chain's new retention horizon first)",
    )
    apply_parser.add_argument(
        "--ism",
        action="store_true",
        help="install the shipped ISM policies instead (clusters with the ISM plugin)",
    )
    apply_parser.add_argument(
        "--now", type=_parse_now, default=None, help=argparse.SUPPRESS
    )  # for tests and what-if runs: an ISO 8601 instant
    apply_parser.set_defaults(func=run_apply)


def _parse_now(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run_apply(args: argparse.Namespace, settings: Settings) -> int:
    client = make_client(settings.opensearch)
    archive = getattr(args, "archive", False)
    if args.ism:
        if args.dry_run or archive:
            raise ConfigError(
                "--ism installs index policies; it has no dry run and no archive part: run "
                "`retention apply --archive` on a schedule for the archive"
            )
        from pipeline.retention_ism import install_ism

        for policy_id in install_ism(client, settings):
            print(f"installed ISM policy {policy_id}")
        return 0
    now = args.now or datetime.now(UTC)
    if archive and not args.dry_run and now > datetime.now(UTC):
        raise ConfigError(
            f"--now {now.isoformat()} is in the future: archive retention records when it ran "
            "in each horizon, so it may only look ahead with --dry-run"
        )
    store = open_store(settings.archive)
    decisions = apply(client, settings, store, now, dry_run=args.dry_run)
    refused = any(d.action == "refuse" for d in decisions)
    if archive:
        trimmed = apply_archive(store, settings.archive_policy_days, now, dry_run=args.dry_run)
        refused = refused or bool(trimmed.refused)
    return 1 if refused else 0
