"""Every metric the alert rules and the dashboard use is exported, with that type and labels.

The pipeline's metrics (``pipeline.telemetry``, the process collector) and the lag
exporter's are served over real HTTP ``/metrics`` endpoints and parsed back as
Prometheus would; a renamed metric or label then breaks this test, not an alert.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from pipeline import telemetry
from pipeline.observability.lag import LagExporter, PartitionLag
from pipeline.observability.rules import RULES, render_rules
from pipeline.settings import Settings
from pipeline.stack.common import free_ports
from tests.unit.test_prometheus_rules import _alerts, dashboard_queries

# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
NAME = re.compile(r"\b(auditstream_[a-z0-9_]+|process_[a-z_]+|up|ALERTS)\b(\{[^}]*\})?")
GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")
RATE_OF = re.compile(r"\b(rate|increase|irate)\(\s*([a-z_:][a-z0-9_:]*)")
BUILTIN = {"up", "ALERTS"}


@dataclass(frozen=True)
class Exposed:
    type: str
    labels: frozenset[str]


def _touch_every_pipeline_metric() -> None:
    """Give every labelled metric one child, so it shows on /metrics like a busy process."""
    for value in vars(telemetry).values():
        if isinstance(value, MetricWrapperBase) and value._labelnames:
            value.labels(*["x"] * len(value._labelnames))


def _scrape(port: int) -> dict[str, Exposed]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    exposed: dict[str, Exposed] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(sample.labels) - {"le", "quantile"}
            previous = exposed.get(sample.name)
            if previous is not None:
                labels |= previous.labels
            exposed[sample.name] = Exposed(family.type, labels)
    return exposed


@pytest.fixture(scope="module")
def exposed() -> dict[str, Exposed]:
    pipeline_port, lag_port = free_ports(2)
    _touch_every_pipeline_metric()
    pipeline_server, _ = start_http_server(pipeline_port, addr="127.0.0.1", registry=REGISTRY)
    exporter = LagExporter.create(Settings())
    exporter.collector.update(
        [PartitionLag("auditstream-worker", "access-events", 0, 5, 0, 9, 4, 1.5)]
    )
    lag_server, _ = start_http_server(lag_port, addr="127.0.0.1", registry=exporter.registry)
    try:
        found = _scrape(pipeline_port)
        lag = _scrape(lag_port)
    finally:
        pipeline_server.shutdown()
        lag_server.shutdown()
    # The lag exporter's own registry must not carry the pipeline's metrics (and vice versa).
    assert not {n for n in lag if n.startswith("auditstream_events")}
    for name, info in lag.items():
        if name.startswith("auditstream_"):
            assert name not in found, f"{name} is exported by both"
            found[name] = info
    return found


def _queries() -> list[tuple[str, str]]:
    rules = [(r["alert"], r["expr"]) for r in _alerts(RULES.read_text())]
    rules += [(f"fast {r['alert']}", r["expr"]) for r in _alerts(render_rules(lag_high_for="5s"))]
    return rules + [(f"dashboard: {q[:40]}", q) for q in dashboard_queries()]


@pytest.mark.parametrize(("where", "expr"), _queries())
def test_metrics_in_rules_and_dashboard_exist_with_their_labels(exposed, where, expr):
    used = NAME.findall(expr)
    assert used, f"{where}: no metric found in {expr}"
    label_pool = set(TARGET_LABELS) | {"le"}
    for name, matchers in used:
        if name in BUILTIN:
            continue
        assert name in exposed, f"{where}: {name} is not exported by any Auditstream process"
        info = exposed[name]
        label_pool |= info.labels
        for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers or ""):
            assert label in info.labels | TARGET_LABELS, (
                f"{where}: {name} has no label {label!r} (it has {sorted(info.labels)})"
            )
    for clause in GROUPING.findall(expr):
        for label in filter(None, (x.strip() for x in clause.split(","))):
            assert label in label_pool, f"{where}: no metric in the query has label {label!r}"
    for function, name in RATE_OF.findall(expr):
        if name in exposed:
            assert exposed[name].type in ("counter", "histogram"), (
                f"{where}: {function}() of {name}, a {exposed[name].type}"
            )


def test_design_metrics_have_their_types_and_labels(exposed):
    """DESIGN, Metrics: names, types and label sets shared by every issue."""
    design = {
        "auditstream_events_total": ("counter", {"stage", "result"}),
        "auditstream_dead_letters_total": ("counter", {"reason"}),
        "auditstream_enrichment_errors_total": ("counter", {"enricher"}),
        "auditstream_alerts_total": ("counter", {"detector", "severity"}),
        "auditstream_sink_batch_seconds_bucket": ("histogram", {"sink"}),
        "auditstream_sink_retries_total": ("counter", {"sink"}),
        "auditstream_freshness_seconds_bucket": ("histogram", set()),
        "auditstream_producer_delay_seconds_bucket": ("histogram", set()),
        "auditstream_archive_objects_total": ("counter", {"topic"}),
        "auditstream_archive_bytes_total": ("counter", {"topic"}),
        "auditstream_consumer_lag_messages": ("gauge", {"group", "topic", "partition"}),
        "auditstream_consumer_lag_seconds": ("gauge", {"group", "topic", "partition"}),
        "auditstream_verify_last_success_timestamp_seconds": ("gauge", set()),
        "auditstream_verify_failures_total": ("counter", set()),
    }
    for name, (kind, labels) in design.items():
        assert name in exposed, name
        assert exposed[name] == Exposed(kind, frozenset(labels)), name
