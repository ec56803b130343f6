"""The Prometheus alert rules, rendered from one template.

``deploy/prometheus/rules/auditstream.rules.yml.tmpl`` holds the rules with
``@{name}`` placeholders for durations and thresholds. The shipped
``auditstream.rules.yml`` is :func:`render_rules` with :data:`DEFAULTS`
(regenerate it with ``python -m pipeline.observability.rules > …``); tests
render the same template with :data:`FAST` so a real Prometheus fires an
alert within seconds instead of minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from string import Template

from pipeline.errors import ConfigError

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
TEMPLATE = DEPLOY_DIR / "rules" / "auditstream.rules.yml.tmpl"
RULES = DEPLOY_DIR / "rules" / "auditstream.rules.yml"

DEFAULTS: dict[str, str] = {
    # Where operators read the runbook; render with runbook=<your docs URL> to link there.
    "runbook": "deploy/prometheus/RUNBOOK.md",
    "lag_high_seconds": "120",
    "lag_high_for": "5m",
    "lag_growing_window": "10m",
    "lag_growing_min_messages": "1000",
    "lag_growing_for": "15m",
    "exporter_stale_seconds": "300",
    "exporter_down_for": "5m",
    "worker_down_for": "2m",
    "freshness_window": "5m",
    "freshness_slo_seconds": "5",
    "freshness_for": "10m",
    "dead_letters_window": "5m",
    "dead_letters_for": "1m",
    "sink_errors_window": "5m",
    "sink_errors_for": "5m",
    "sink_record_errors_for": "1m",
    "archive_group": "auditstream-sink-archive",
    "archive_stalled_window": "15m",
    "archive_stalled_for": "5m",
    "verify_failed_window": "1h",
    "verify_max_age_seconds": "90000",
    "verify_overdue_for": "10m",
}

# Short durations and low thresholds for tests against a real Prometheus.
FAST: dict[str, str] = {
    "lag_high_seconds": "5",
    "lag_high_for": "5s",
    "lag_growing_window": "30s",
    "lag_growing_min_messages": "10",
    "lag_growing_for": "10s",
    "exporter_stale_seconds": "30",
    "exporter_down_for": "10s",
    "worker_down_for": "5s",
    "freshness_window": "30s",
    "freshness_for": "10s",
    "dead_letters_window": "30s",
    "dead_letters_for": "0s",
    "sink_errors_window": "30s",
    "sink_errors_for": "10s",
    "sink_record_errors_for": "0s",
    "archive_stalled_window": "1m",
    "archive_stalled_for": "10s",
    "verify_failed_window": "1m",
    "verify_overdue_for": "10s",
}


class _RulesTemplate(Template):
    delimiter = "@"  # PromQL and Go templates use $ and {{ }}; @ is free


def render_rules(**overrides: str) -> str:
    """The rules file text: the template with :data:`DEFAULTS` updated by ``overrides``."""
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown rule parameters: {', '.join(sorted(unknown))}")
    values = {**DEFAULTS, **overrides}
    text = TEMPLATE.read_text()
    body = text[text.index("\ngroups:") + 1 :]  # the template's own header comment stays there
    try:
        rendered = _RulesTemplate(body).substitute(values)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{TEMPLATE} has a placeholder without a value: {exc}") from exc
    return HEADER + rendered


HEADER = """\
# Auditstream alert rules. GENERATED from auditstream.rules.yml.tmpl: edit the template, then
#   .venv/bin/python -m pipeline.observability.rules > deploy/prometheus/rules/auditstream.rules.yml
# Runbook: ../RUNBOOK.md. Rule unit tests (promtool test rules): ../tests/auditstream.rules.test.yml
"""


def main(argv: list[str] | None = None) -> int:
    """Print the rules; ``name=value`` arguments override :data:`DEFAULTS`."""
    pairs = [arg.partition("=") for arg in (sys.argv[1:] if argv is None else argv)]
    sys.stdout.write(render_rules(**{name: value for name, _, value in pairs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
