"""Every Prometheus metric Auditstream exports, defined once (DESIGN, Metrics).

Names follow Prometheus conventions (``auditstream_`` prefix, ``_total`` for
counters, base units); labels are bounded sets. Components import the metric
objects from here and never define their own, so a name cannot drift.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("auditstream")

# Latency buckets from 5 ms to ~17 min: batches, freshness and producer delay
# all sit somewhere in that range.
_SECONDS_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

EVENTS = Counter(
    "auditstream_events_total",
    "Records handled, by pipeline stage or sink and by result.",
    ["stage", "result"],
)
DEAD_LETTERS = Counter(
    "auditstream_dead_letters_total",
    "Records sent to the dead-letter topic, by reason code (a fixed set).",
    ["reason"],
)
ENRICHMENT_ERRORS = Counter(
    "auditstream_enrichment_errors_total",
    "Enrichments that failed while the event still flowed.",
    ["enricher"],
)
ALERTS = Counter("auditstream_alerts_total", "Alerts raised.", ["detector", "severity"])
SINK_BATCH_SECONDS = Histogram(
    "auditstream_sink_batch_seconds",
    "Time to write one batch durably (one bulk request, one set of archive objects).",
    ["sink"],
    buckets=_SECONDS_BUCKETS,
)
SINK_RETRIES = Counter(
    "auditstream_sink_retries_total",
    "Batch writes that failed with a transport error and were retried.",
    ["sink"],
)
FRESHNESS_SECONDS = Histogram(
    "auditstream_freshness_seconds",
    "Indexed minus received (Kafka record timestamp): the freshness SLO.",
    buckets=_SECONDS_BUCKETS,
)
PRODUCER_DELAY_SECONDS = Histogram(
    "auditstream_producer_delay_seconds",
    "Received (Kafka record timestamp) minus occurred (the producer's event time).",
    buckets=_SECONDS_BUCKETS,
)
ARCHIVE_OBJECTS = Counter(
    "auditstream_archive_objects_total",
    "Archive objects this process created, by source topic.",
    ["topic"],
)
ARCHIVE_BYTES = Counter(
    "auditstream_archive_bytes_total",
    "Bytes of archive objects this process created, by source topic.",
    ["topic"],
)

VERIFY_LAST_SUCCESS = Gauge(
    "auditstream_verify_last_success_timestamp_seconds",
    "Unix time of the last periodic archive verification that passed.",
)
VERIFY_FAILURES = Counter(
    "auditstream_verify_failures_total",
    "Periodic archive verifications that found a problem (or could not finish).",
)


def dead_lettered(
    reason: str, detail: str, *, topic: str, partition: int, offset: int, stage: str = "validate"
) -> None:
    """Count one dead letter and log it, in one call, so the two never disagree."""
    DEAD_LETTERS.labels(reason=reason).inc()
    EVENTS.labels(stage=stage, result="dead_letter").inc()
    log.warning("dead letter %s at %s/%d@%d: %s", reason, topic, partition, offset, detail[:500])


def start_metrics_server(port: int | None, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port``; does nothing when no port is configured."""
    if port is None:
        return
    start_http_server(port, addr=addr)
