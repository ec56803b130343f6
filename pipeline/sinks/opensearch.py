"""``auditstream sink opensearch``: enriched events and alerts into searchable indices.

DESIGN, Accounting (OpenSearch: first write wins) and Indices:

- events go to ``<events prefix>-YYYY.MM.DD`` (or ``YYYY.MM``) by ``occurred_at``,
  written with ``op_type=create`` and ``_id`` = ``event_id``: a ``409`` whose
  stored ``event.hash`` equals ours is done, a different hash is reported and
  never overwritten;
- alerts go to ``<alerts prefix>-YYYY.MM`` by ``first_seen``, which stays the
  same for every revision of an alert (``last_seen`` moves, and an alert must
  stay one document in one index), with external versioning (``version`` =
  revision): a stale revision never overwrites a newer one;
- events older than the search retention are counted (``expired``), not
  indexed: the archive keeps them;
- one bulk request per batch; refused items (429, 5xx) are retried, a mapping
  error is a bug in our template and stops the sink.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc

from pipeline import ecs, telemetry
from pipeline.codec import Decoder
from pipeline.errors import DecodeError, DeliveryError, ServiceUnavailable, TransportError
from pipeline.schemas import ALERT, ENRICHED_EVENT, SchemaStore
from pipeline.settings import OpenSearchSettings, RetentionSettings
from pipeline.sinks.base import Batch, Record, Sink, SinkError
from pipeline.stages.validate import to_micros

log = logging.getLogger(__name__)

EVENTS_TEMPLATE = "audit-events.template.json"
ALERTS_TEMPLATE = "audit-alerts.template.json"
# Per-item errors that mean our documents do not fit our own mapping: a bug, never retried.
MAPPING_ERRORS = frozenset(
    {
        "mapper_parsing_exception",
        "strict_dynamic_mapping_exception",
        "illegal_argument_exception",
        "document_parsing_exception",
    }
)


# -- index names ----------------------------------------------------------------


def events_index(prefix: str, occurred_at: datetime, granularity: str = "day") -> str:
    """``audit-events-2025.03.01`` (day) or ``audit-events-2025.03`` (month), in UTC."""
    when = occurred_at.astimezone(UTC)
    suffix = when.strftime("%Y.%m.%d") if granularity == "day" else when.strftime("%Y.%m")
    return f"{prefix}-{suffix}"


def alerts_index(prefix: str, first_seen: datetime) -> str:
    """``audit-alerts-2025.03``: the month the alert opened, the same for every revision."""
    return f"{prefix}-{first_seen.astimezone(UTC).strftime('%Y.%m')}"


# -- index templates --------------------------------------------------------------


def templates_dir() -> Path:
    """``deploy/opensearch`` in a source checkout, or the copy packaged in the wheel."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "deploy" / "opensearch", here / "_opensearch"):
        if (candidate / EVENTS_TEMPLATE).is_file():
            return candidate
    raise SinkError(f"no {EVENTS_TEMPLATE} in deploy/opensearch next to {here}")


def load_template(filename: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((templates_dir() / filename).read_text())
    return loaded


def render_template(
    template: Mapping[str, Any], prefix: str, *, shards: int, replicas: int
) -> dict[str, Any]:
    """The shipped template for indices ``<prefix>-*`` read through the alias ``<prefix>``.

    A longer prefix gets a higher priority, so a more specific template (e.g. a
    test's ``audit-events-t1``) wins over ``audit-events`` instead of clashing.
    """
    body = copy.deepcopy(dict(template))
    body["index_patterns"] = [f"{prefix}-*"]
    body["priority"] = 100 + len(prefix)
    inner = body.setdefault("template", {})
    inner["aliases"] = {prefix: {}}
    index = inner.setdefault("settings", {}).setdefault("index", {})
    index["number_of_shards"] = shards
    index["number_of_replicas"] = replicas
    return body


def install_templates(client: OpenSearch, settings: OpenSearchSettings) -> list[str]:
    """PUT both composable index templates (idempotent); returns their names.

    A template only shapes indices created after it, so the mappings are also put
    on the existing indices of the prefix: fields added by a newer version (an
    additive change) then fit today's index too. A conflicting change is refused
    by OpenSearch and stops the sink with OpenSearch's reason.
    """
    names = []
    for filename, prefix in (
        (EVENTS_TEMPLATE, settings.events_index_prefix),
        (ALERTS_TEMPLATE, settings.alerts_index_prefix),
    ):
        body = render_template(
            load_template(filename),
            prefix,
            shards=settings.number_of_shards,
            replicas=settings.number_of_replicas,
        )
        put_template(client, settings, prefix, body)
        names.append(prefix)
    return names


def put_template(
    client: OpenSearch,
    settings: OpenSearchSettings,
    prefix: str,
    body: dict[str, Any],
    *,
    extend_existing: bool = True,
) -> None:
    """PUT one index template; with ``extend_existing``, put its mappings on ``<prefix>-*`` too."""
    try:
        client.indices.put_index_template(name=prefix, body=body)
        if extend_existing and client.indices.exists(index=f"{prefix}-*", allow_no_indices=False):
            client.indices.put_mapping(index=f"{prefix}-*", body=body["template"]["mappings"])
    except os_exc.ConnectionError as exc:
        raise TransportError(f"OpenSearch at {settings.url}: {exc}") from exc
    except os_exc.TransportError as exc:
        raise SinkError(
            f"OpenSearch at {settings.url} refused the index template {prefix}: "
            f"{exc.status_code} {exc.error}: {exc.info}"
        ) from exc


# -- the client -----------------------------------------------------------------


def make_client(
    settings: OpenSearchSettings, *, timeout_s: float | None = None, connections: int | None = None
) -> OpenSearch:
    """A client from the settings; ``timeout_s`` and ``connections`` (pool size) override."""
    pool: dict[str, Any] = {"pool_maxsize": connections} if connections else {}
    auth = None
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else ""
        auth = (settings.username, password)
    return OpenSearch(
        hosts=[settings.url],
        http_auth=auth,
        verify_certs=settings.verify_certs,
        ca_certs=str(settings.ca_certs) if settings.ca_certs else None,
        timeout=timeout_s or settings.timeout_s,
        max_retries=1,
        retry_on_timeout=False,
        **pool,
    )


def wait_for_opensearch(
    client: OpenSearch, url: str, timeout_s: float, *, interval_s: float = 1.0
) -> None:
    """Return once OpenSearch answers; raise :class:`ServiceUnavailable` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            client.info()
            return
        except (os_exc.ConnectionError, os_exc.TransportError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(
                f"OpenSearch at {url} did not answer within {timeout_s:.0f} s; is "
                f"`auditstream stack up` running? (last error: {last})"
            )
        time.sleep(interval_s)


# -- the sink -------------------------------------------------------------------


@dataclass
class _Item:
    record: Record
    kind: str  # "event" | "alert"
    index: str
    id: str
    doc: dict[str, Any]
    content_hash: str = ""
    revision: int = 0
    received: datetime | None = None
    occurred: datetime | None = None

    def action(self) -> dict[str, Any]:
        if self.kind == "event":
            return {"create": {"_index": self.index, "_id": self.id}}
        return {
            "index": {
                "_index": self.index,
                "_id": self.id,
                "version": self.revision,
                "version_type": "external",
            }
        }


@dataclass
class _Outcome:
    retry: list[tuple[_Item, int, str]] = field(default_factory=list)
    conflicts: list[_Item] = field(default_factory=list)


class OpenSearchSink(Sink):
    """Bulk-writes ECS documents: events create-once, alerts by external version."""

    name = "opensearch"

    def __init__(
        self,
        client: OpenSearch,
        settings: OpenSearchSettings,
        retention: RetentionSettings,
        store: SchemaStore,
        *,
        events_topic: str,
        alerts_topic: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.settings = settings
        self.retention = retention
        self.events_topic = events_topic
        self.alerts_topic = alerts_topic
        self._events = Decoder(store, store.latest(ENRICHED_EVENT))
        self._alerts = Decoder(store, store.latest(ALERT))
        self._now = now

    # -- the contract -------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        now = self._now()
        ingested = ecs.iso(now)
        items: list[_Item] = []
        for record in batch.pending():
            item = self._prepare(record, now)
            if item is None:
                batch.settle([record])
                continue
            item.doc.setdefault("event", {})["ingested"] = ingested
            items.append(item)
        if not items:
            return
        response = self._bulk(items)
        outcome = self._settle(items, response, batch, now)
        if outcome.conflicts:
            self._resolve_conflicts(outcome.conflicts, batch, outcome)
        if outcome.retry:
            statuses = sorted({f"{status} {kind}" for _, status, kind in outcome.retry})
            raise TransportError(
                f"OpenSearch refused {len(outcome.retry)} of {len(items)} documents "
                f"({', '.join(statuses)}); retrying them"
            )

    # -- preparing documents --------------------------------------------------------

    def _prepare(self, record: Record, now: datetime) -> _Item | None:
        """The document for one record, or None when it is settled without indexing."""
        stage = self.stage
        if record.topic not in (self.events_topic, self.alerts_topic):
            raise SinkError(f"opensearch: a record from unexpected topic {record.topic}")
        decoder = self._events if record.topic == self.events_topic else self._alerts
        try:
            decoded = decoder.decode(record.value).record
        except DecodeError as exc:
            if exc.reason == "unknown_schema":
                raise SinkError(
                    f"opensearch: {record.topic}[{record.partition}]@{record.offset} is written "
                    f"with a schema this sink does not know ({exc}); upgrade the sink"
                ) from exc
            telemetry.EVENTS.labels(stage=stage, result="error").inc()
            log.error(
                "opensearch: %s[%d]@%d does not decode, not indexed (kept in the archive): %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return None
        if record.topic == self.events_topic:
            return self._event_item(record, decoded, now)
        return self._alert_item(record, decoded, now)

    def _event_item(self, record: Record, enriched: dict[str, Any], now: datetime) -> _Item | None:
        event = enriched["event"]
        occurred: datetime = event["occurred_at"]
        if occurred < now - timedelta(days=self.retention.events_days):
            telemetry.EVENTS.labels(stage=self.stage, result="expired").inc()
            return None
        return _Item(
            record=record,
            kind="event",
            index=events_index(
                self.settings.events_index_prefix, occurred, self.settings.index_granularity
            ),
            id=event["event_id"],
            doc=ecs.to_document(enriched),
            content_hash=enriched["content_hash"],
            received=enriched["received_at"],
            occurred=occurred,
        )

    def _alert_item(self, record: Record, alert: dict[str, Any], now: datetime) -> _Item | None:
        if alert["last_seen"] < now - timedelta(days=self.retention.alerts_days):
            telemetry.EVENTS.labels(stage=self.stage, result="expired").inc()
            return None
        return _Item(
            record=record,
            kind="alert",
            index=alerts_index(self.settings.alerts_index_prefix, alert["first_seen"]),
            id=alert["alert_id"],
            doc=ecs.alert_to_document(alert),
            revision=int(alert["revision"]),
        )

    # -- writing ------------------------------------------------------------------

    def _bulk(self, items: list[_Item]) -> dict[str, Any]:
        body: list[dict[str, Any]] = []
        for item in items:
            body.append(item.action())
            body.append(item.doc)
        try:
            response: dict[str, Any] = self.client.bulk(body=body, params={"refresh": "false"})
        except os_exc.ConnectionError as exc:  # includes timeouts
            raise TransportError(f"OpenSearch at {self.settings.url}: {exc}") from exc
        except os_exc.TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            if status == 429 or status >= 500 or status == 0:
                raise TransportError(
                    f"OpenSearch at {self.settings.url}: bulk refused: {status} {exc.error}"
                ) from exc
            raise DeliveryError(
                f"OpenSearch at {self.settings.url} rejected the bulk request: "
                f"{status} {exc.error}: {exc.info}"
            ) from exc
        if len(response.get("items", [])) != len(items):
            raise TransportError(
                f"OpenSearch at {self.settings.url}: bulk answered {len(response.get('items', []))}"
                f" items for {len(items)}"
            )
        return response

    def _settle(
        self, items: list[_Item], response: dict[str, Any], batch: Batch, now: datetime
    ) -> _Outcome:
        outcome = _Outcome()
        stage = self.stage
        for item, result in zip(items, response["items"], strict=True):
            op = next(iter(result.values()))
            status = int(op.get("status", 0))
            if status in (200, 201):
                telemetry.EVENTS.labels(stage=stage, result="ok").inc()
                if item.received is not None and item.occurred is not None:
                    telemetry.FRESHNESS_SECONDS.observe(_seconds(now, item.received))
                    telemetry.PRODUCER_DELAY_SECONDS.observe(_seconds(item.received, item.occurred))
                batch.settle([item.record])
            elif status == 409 and item.kind == "alert":
                # An equal or newer revision is already stored: that is the one to keep.
                telemetry.EVENTS.labels(stage=stage, result="duplicate").inc()
                batch.settle([item.record])
            elif status == 409:
                outcome.conflicts.append(item)
            else:
                error = op.get("error") or {}
                kind = str(error.get("type", "unknown")) if isinstance(error, dict) else str(error)
                if status == 429 or status >= 500:
                    outcome.retry.append((item, status, kind))
                    continue
                reason = error.get("reason") if isinstance(error, dict) else ""
                if kind in MAPPING_ERRORS:
                    raise DeliveryError(
                        f"opensearch: {item.kind} {item.id} does not fit the {item.index} mapping "
                        f"({status} {kind}: {reason}); this is a bug in the index template or "
                        "the ECS mapping — the sink stops rather than drop it"
                    )
                raise DeliveryError(
                    f"opensearch: {item.kind} {item.id} was refused by {item.index}: "
                    f"{status} {kind}: {reason}"
                )
        return outcome

    def _resolve_conflicts(self, items: list[_Item], batch: Batch, outcome: _Outcome) -> None:
        """409 on create: done if the stored document has our content hash, else reported."""
        docs = [{"_index": item.index, "_id": item.id, "_source": ["event.hash"]} for item in items]
        try:
            response = self.client.mget(body={"docs": docs})
        except (os_exc.ConnectionError, os_exc.TransportError) as exc:
            raise TransportError(f"OpenSearch at {self.settings.url}: mget: {exc}") from exc
        stage = self.stage
        for item, found in zip(items, response.get("docs", []), strict=True):
            if not found.get("found"):
                outcome.retry.append((item, 404, "conflict_then_missing"))
                continue
            stored = (found.get("_source") or {}).get("event", {}).get("hash")
            if stored == item.content_hash:
                telemetry.EVENTS.labels(stage=stage, result="duplicate").inc()
            else:
                telemetry.EVENTS.labels(stage=stage, result="error").inc()
                log.error(
                    "opensearch: CONFLICT event_id=%s index=%s stored_hash=%s new_hash=%s "
                    "(%s[%d]@%d): a different event with this id is already indexed; "
                    "not overwritten",
                    item.id,
                    item.index,
                    stored,
                    item.content_hash,
                    item.record.topic,
                    item.record.partition,
                    item.record.offset,
                )
            batch.settle([item.record])


def _seconds(later: datetime, earlier: datetime) -> float:
    return max(0.0, (to_micros(later) - to_micros(earlier)) / 1_000_000)
