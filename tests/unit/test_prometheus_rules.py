"""The shipped Prometheus configuration: rule unit tests with promtool, and its consistency.

promtool and amtool come from Debian's ``prometheus`` and ``prometheus-alertmanager``
packages (``make test`` installs them): a missing promtool fails these tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.observability.rules import DEFAULTS, DEPLOY_DIR, FAST, RULES, TEMPLATE, render_rules

RULE_TESTS = DEPLOY_DIR / "tests" / "auditstream.rules.test.yml"
DASHBOARD = DEPLOY_DIR / "grafana" / "auditstream-dashboard.json"
RUNBOOK = DEPLOY_DIR / "RUNBOOK.md"
REQUIRED_ALERTS = {
    "AuditstreamConsumerLagHigh",
    "AuditstreamConsumerLagGrowing",
    "AuditstreamWorkerDown",
    "AuditstreamFreshnessSLOBreached",
    "AuditstreamDeadLetters",
    "AuditstreamSinkWriteFailing",
    "AuditstreamArchiveStalled",
    "AuditstreamIntegrityVerificationFailed",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed; `make test` installs it (apt-get install prometheus "
            "prometheus-alertmanager)"
        )
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )


def _alerts(text: str) -> list[dict]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


def test_every_rule_passes_its_promtool_unit_tests():
    result = _run(_tool("promtool"), "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_where_promtool_sees_it_fire():
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in _alerts(RULES.read_text())}
    assert alerts - fired == set()


def test_the_issue_s_alerts_are_all_there():
    assert {rule["alert"] for rule in _alerts(RULES.read_text())} >= REQUIRED_ALERTS


def test_shipped_rules_are_the_template_rendered_with_defaults():
    assert RULES.read_text() == render_rules(), (
        f"{RULES} is stale: run `.venv/bin/python -m pipeline.observability.rules > {RULES}`"
    )


def test_every_template_placeholder_has_a_default_and_every_default_is_used():
    used = set(re.findall(r"(?<!@)@\{(\w+)\}", TEMPLATE.read_text()))
    assert used == set(DEFAULTS)
    assert set(FAST) <= set(DEFAULTS)


def test_every_alert_has_severity_summary_description_and_a_runbook_section():
    runbook = RUNBOOK.read_text()
    anchors = {
        heading.strip().lower() for heading in re.findall(r"^## (.+)$", runbook, re.MULTILINE)
    }
    for rule in _alerts(RULES.read_text()):
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        assert notes["runbook_url"].endswith(f"#{name.lower()}"), name
        assert name.lower() in anchors, f"{name} has no section in {RUNBOOK}"


def test_fast_rendering_is_valid_and_shortens_every_for_duration(tmp_path):
    fast = tmp_path / "fast.rules.yml"
    fast.write_text(render_rules(**FAST))
    result = _run(_tool("promtool"), "check", "rules", fast)
    assert result.returncode == 0, result.stdout + result.stderr
    for rule in _alerts(fast.read_text()):
        assert re.fullmatch(r"\d+s|0m", rule["for"]), (rule["alert"], rule["for"])


def test_prometheus_config_is_valid():
    result = _run(_tool("promtool"), "check", "config", DEPLOY_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_example_is_valid():
    config = DEPLOY_DIR / "alertmanager.yml"
    routes = yaml.safe_load(config.read_text())["route"]["routes"]
    assert {m for r in routes for m in r["matchers"]} >= {'severity="page"', 'severity="ticket"'}
    amtool = shutil.which("amtool")
    if amtool is None:  # the structure above is still checked
        return
    result = _run(amtool, "check-config", config)
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def test_dashboard_queries_are_valid_promql(tmp_path):
    queries = [q.replace("$__rate_interval", "5m") for q in dashboard_queries()]
    assert len(queries) >= 15
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = _run(_tool("promtool"), "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_uses_a_datasource_variable_not_a_fixed_uid():
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
