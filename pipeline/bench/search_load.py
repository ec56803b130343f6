"""Bench-owned indices for the search bench: created, bulk-loaded, found again, removed.

Each corpus lives under its own ``bench-search-<hex>`` prefix: day indices
``<prefix>-events-YYYY.MM.DD`` (the shipped events template, rendered for the
prefix as the sink renders it for ``audit-events``) read through the alias
``<prefix>-events``, and an empty ``<prefix>-alerts-YYYY.MM`` so ``timeline``
reads two aliases as it does in production. The events template's ``_meta``
records what was loaded (``bench``: documents, seed, time span, complete), so a
later run can reuse a corpus kept with ``--keep``.

The load sends bulk requests of :data:`CHUNK` documents, ``parallel`` at a
time, as ``create`` with ``_id`` = ``event.id`` (what the sink does), into
indices whose refresh is off until the end; rejected items (429) are retried.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc

from pipeline.bench.common import say
from pipeline.errors import AuditstreamError
from pipeline.settings import OpenSearchSettings, Settings
from pipeline.sinks.opensearch import (
    ALERTS_TEMPLATE,
    EVENTS_TEMPLATE,
    alerts_index,
    load_template,
    render_template,
)

BASE = "bench-search"
CHUNK = 5000
BULK_TIMEOUT_S = 300
RETRIES = 8
PROGRESS_EVERY_S = 15.0


class BenchError(AuditstreamError):
    """The search bench could not build or load its corpus."""


@dataclass(frozen=True)
class Corpus:
    """A loaded (or reused) corpus: where it is and what it holds."""

    prefix: str
    documents: int
    seed: int
    users: int
    start: datetime
    hours: int

    @property
    def events(self) -> str:
        return f"{self.prefix}-events"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}-alerts"

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.hours)

    def meta(self, complete: bool) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "seed": self.seed,
            "users": self.users,
            "start": self.start.isoformat(),
            "hours": self.hours,
            "complete": complete,
        }

    @classmethod
    def from_meta(cls, prefix: str, meta: dict[str, Any]) -> Corpus:
        return cls(
            prefix=prefix,
            documents=int(meta["documents"]),
            seed=int(meta["seed"]),
            users=int(meta["users"]),
            start=datetime.fromisoformat(meta["start"]),
            hours=int(meta["hours"]),
        )


def bench_client(settings: OpenSearchSettings, connections: int = 4) -> OpenSearch:
    """The sink's client with a longer timeout and ``connections`` kept open (the parallel
    bulk requests and the heap sampler)."""
    from pipeline.sinks.opensearch import make_client

    return make_client(settings, timeout_s=max(settings.timeout_s, 120.0), connections=connections)


def new_prefix() -> str:
    return f"{BASE}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class LoadStats:
    documents: int
    seconds: float  # first request sent to the last answered
    generate_s: float  # of which the bench's own thread spent generating and serialising
    refresh_s: float  # turning refresh back on and refreshing, after the load
    requests: int
    retried: int  # items refused with 429/5xx and sent again
    parallel: int
    chunk: int

    @property
    def rate(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else 0.0


# -- templates and indices ------------------------------------------------------------------------


def templates(corpus: Corpus, settings: Settings, *, complete: bool) -> dict[str, dict[str, Any]]:
    """Both shipped templates rendered for the corpus's prefixes (name → body)."""
    o = settings.opensearch
    events = render_template(
        load_template(EVENTS_TEMPLATE),
        corpus.events,
        shards=o.number_of_shards,
        replicas=o.number_of_replicas,
    )
    events.setdefault("_meta", {})["bench"] = corpus.meta(complete)
    alerts = render_template(
        load_template(ALERTS_TEMPLATE),
        corpus.alerts,
        shards=o.number_of_shards,
        replicas=o.number_of_replicas,
    )
    return {corpus.events: events, corpus.alerts: alerts}


def events_properties() -> dict[str, Any]:
    """The shipped events template's mapping ``properties``."""
    properties: dict[str, Any] = load_template(EVENTS_TEMPLATE)["template"]["mappings"][
        "properties"
    ]
    return properties


def shipped_refresh_interval() -> str:
    return str(load_template(EVENTS_TEMPLATE)["template"]["settings"]["index"]["refresh_interval"])


def create(client: OpenSearch, corpus: Corpus, settings: Settings, index_names: list[str]) -> None:
    """Put the templates; create the day indices with refresh off, and the alerts index."""
    for name, body in templates(corpus, settings, complete=False).items():
        client.indices.put_index_template(name=name, body=body)
    for name in index_names:
        client.indices.create(index=name, body={"settings": {"index": {"refresh_interval": "-1"}}})
    client.indices.create(index=alerts_index(corpus.alerts, corpus.end))


def mark_complete(client: OpenSearch, corpus: Corpus, settings: Settings) -> None:
    body = templates(corpus, settings, complete=True)[corpus.events]
    client.indices.put_index_template(name=corpus.events, body=body)


def find_reusable(client: OpenSearch, documents: int) -> tuple[Corpus | None, list[str]]:
    """A complete corpus of ``documents`` kept by an earlier run, and notes on the others."""
    # none yet is a 404: expected, so not logged as a failed request
    found = client.indices.get_index_template(name=f"{BASE}-*-events", ignore=404)
    notes: list[str] = []
    for item in found.get("index_templates", []):
        name = str(item["name"])
        meta = item["index_template"].get("_meta", {}).get("bench")
        if not meta:
            continue
        prefix = name.removesuffix("-events")
        if not meta.get("complete"):
            notes.append(f"{prefix}: an incomplete load (a run stopped or still loading)")
            continue
        if int(meta["documents"]) != documents:
            notes.append(f"{prefix}: {int(meta['documents']):,} documents, not {documents:,}")
            continue
        corpus = Corpus.from_meta(prefix, meta)
        counted = count(client, corpus.events)
        if counted != documents:
            notes.append(f"{prefix}: counts {counted:,} documents of {documents:,}")
            continue
        return corpus, notes
    return None, notes


def count(client: OpenSearch, alias: str) -> int:
    try:
        return int(client.count(index=alias)["count"])
    except os_exc.NotFoundError:
        return 0


def delete(client: OpenSearch, corpus: Corpus) -> None:
    for prefix in (corpus.events, corpus.alerts):
        client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
        if client.indices.exists_index_template(name=prefix):
            client.indices.delete_index_template(name=prefix)


def finish(client: OpenSearch, corpus: Corpus) -> float:
    """Refresh back to the template's interval, then a refresh; the seconds it took."""
    began = time.monotonic()
    client.indices.put_settings(
        index=f"{corpus.events}-*",
        body={"index": {"refresh_interval": shipped_refresh_interval()}},
    )
    client.indices.refresh(index=corpus.events, request_timeout=BULK_TIMEOUT_S)
    return time.monotonic() - began


# -- the bulk load --------------------------------------------------------------------------------


def bulk_lines(docs: Iterable[tuple[str, str, dict[str, Any]]]) -> list[tuple[bytes, bytes]]:
    """``(action line, document line)`` pairs of a bulk body: ``create`` with ``_id``."""
    return [
        (orjson.dumps({"create": {"_index": index, "_id": _id}}) + b"\n", orjson.dumps(doc) + b"\n")
        for index, _id, doc in docs
    ]


class _Sender:
    def __init__(self, client: OpenSearch) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.requests = 0
        self.retried = 0

    def send(self, pairs: list[tuple[bytes, bytes]]) -> None:
        pending = pairs
        for attempt in range(RETRIES):
            body = b"".join(line for pair in pending for line in pair)
            response = self.client.bulk(
                body=body,
                params={"timeout": "5m", "filter_path": "errors,items.*.status,items.*.error"},
                request_timeout=BULK_TIMEOUT_S,
            )
            with self.lock:
                self.requests += 1
            if not response.get("errors"):
                return
            pending = self._refused(pending, response["items"], retry=attempt > 0)
            if not pending:
                return
            with self.lock:
                self.retried += len(pending)
            time.sleep(min(30.0, 0.5 * 2**attempt))
        raise BenchError(
            f"OpenSearch still refused {len(pending)} documents after {RETRIES} attempts "
            "(429/5xx); is its heap large enough? See `auditstream stack status` and its log"
        )

    @staticmethod
    def _refused(
        pending: list[tuple[bytes, bytes]], items: list[dict[str, Any]], *, retry: bool
    ) -> list[tuple[bytes, bytes]]:
        again = []
        for pair, item in zip(pending, items, strict=True):
            op = next(iter(item.values()))
            status = int(op.get("status", 0))
            if status in (200, 201) or (status == 409 and retry):
                continue
            if status == 429 or status >= 500:
                again.append(pair)
                continue
            error = op.get("error") or {}
            raise BenchError(
                f"OpenSearch refused a bench document ({status} {error.get('type')}: "
                f"{error.get('reason')}); the bench's documents must fit the events template: "
                "is pipeline/ecs.py out of step with deploy/opensearch/audit-events.template.json?"
            )
        return again


def _chunks(
    docs: Iterator[tuple[str, str, dict[str, Any]]], size: int
) -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    chunk: list[tuple[str, str, dict[str, Any]]] = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def bulk_load(
    client: OpenSearch,
    docs: Iterator[tuple[str, str, dict[str, Any]]],
    total: int,
    *,
    parallel: int,
    chunk: int = CHUNK,
) -> tuple[float, float, int, int]:
    """Send ``docs`` in bulk requests, ``parallel`` in flight.

    Returns (seconds, of which generating, requests, items retried).
    """
    sender = _Sender(client)
    inflight: deque[Future[None]] = deque()
    sent = 0
    generate_s = 0.0
    began = last_said = time.monotonic()
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="bench-bulk") as pool:
        batches = _chunks(docs, chunk)
        while True:
            t0 = time.monotonic()
            batch = next(batches, None)
            if batch is None:
                break
            pairs = bulk_lines(batch)
            generate_s += time.monotonic() - t0
            while len(inflight) >= parallel:
                inflight.popleft().result()
            inflight.append(pool.submit(sender.send, pairs))
            sent += len(pairs)
            now = time.monotonic()
            if now - last_said >= PROGRESS_EVERY_S:
                say(f"  sent {sent:,} of {total:,} ({sent / (now - began):,.0f} docs/s)")
                last_said = now
        while inflight:
            inflight.popleft().result()
    return time.monotonic() - began, generate_s, sender.requests, sender.retried


# -- what is on disk ------------------------------------------------------------------------------


def index_stats(client: OpenSearch, corpus: Corpus) -> dict[str, int]:
    """Documents, store bytes and segments of the corpus's event indices."""
    stats = client.indices.stats(index=f"{corpus.events}-*", metric="docs,store,segments")
    primaries = stats["_all"]["primaries"]
    return {
        "indices": len(stats.get("indices", {})),
        "documents": int(primaries["docs"]["count"]),
        "store_bytes": int(stats["_all"]["total"]["store"]["size_in_bytes"]),
        "primary_store_bytes": int(primaries["store"]["size_in_bytes"]),
        "segments": int(primaries["segments"]["count"]),
    }
