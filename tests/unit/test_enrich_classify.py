"""Resource classification from ordered YAML rules: first match wins, default internal."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.stages.enrich.classify import ClassificationEnricher
from pipeline.stages.enrich.examples import rules_file
from tests.factories import make_event

RULES = """
rules:
  - name: medical
    match: {service: hr-portal, resource_id: {regex: '^emp-\\d+/medical'}}
    sensitivity: restricted
    data_categories: [PII, PHI]
  - name: hr
    match: {service: hr-portal, resource_type: employee_record}
    sensitivity: confidential
    data_categories: [PII]
  - name: cards
    match: {service: "payments-*", resource_type: table, resource_id: [cards, transactions]}
    sensitivity: restricted
    data_categories: [PCI]
  - name: public
    match: {resource_id: "public-*"}
    sensitivity: public
"""


def _enricher(tmp_path: Path, text: str = RULES) -> ClassificationEnricher:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text))
    return ClassificationEnricher(path, watch=False)


def _classify(
    enricher: ClassificationEnricher, service: str, rtype: str | None, rid: str | None = None
) -> Any:
    resource = {"type": rtype, "id": rid, "name": None} if rtype is not None else None
    event = make_event(
        service={"name": service, "host": None, "environment": None}, resource=resource
    )
    return enricher.enrich(event).get("classification")


def test_first_matching_rule_wins(tmp_path: Path) -> None:
    enricher = _enricher(tmp_path)
    assert _classify(enricher, "hr-portal", "employee_record", "emp-0042/medical") == {
        "sensitivity": "restricted",
        "data_categories": ["PII", "PHI"],
        "rule": "medical",
    }
    assert _classify(enricher, "hr-portal", "employee_record", "emp-0042") == {
        "sensitivity": "confidential",
        "data_categories": ["PII"],
        "rule": "hr",
    }


def test_order_matters(tmp_path: Path) -> None:
    swapped = """
    rules:
      - {name: hr, match: {service: hr-portal}, sensitivity: confidential}
      - {name: medical, match: {resource_id: {regex: medical}}, sensitivity: restricted}
    """
    enricher = _enricher(tmp_path, swapped)
    assert _classify(enricher, "hr-portal", "employee_record", "emp-1/medical")["rule"] == "hr"


def test_globs_lists_and_the_default(tmp_path: Path) -> None:
    enricher = _enricher(tmp_path)
    assert _classify(enricher, "payments-db", "table", "transactions")["rule"] == "cards"
    assert _classify(enricher, "payments-eu", "table", "cards")["data_categories"] == ["PCI"]
    assert _classify(enricher, "object-store", "bucket", "public-assets")["sensitivity"] == "public"
    assert _classify(enricher, "payments-db", "table", "cardsX") == {
        "sensitivity": "internal",
        "data_categories": [],
        "rule": None,
    }
    assert _classify(enricher, "payments-db", "TABLE", "cards")["rule"] is None  # case-sensitive


def test_event_without_a_resource_is_not_classified(tmp_path: Path) -> None:
    assert _classify(_enricher(tmp_path), "sso", None) is None


def test_configured_default(tmp_path: Path) -> None:
    enricher = _enricher(tmp_path, "default: {sensitivity: confidential, data_categories: [PII]}")
    assert _classify(enricher, "crm", "customer", "c-1") == {
        "sensitivity": "confidential",
        "data_categories": ["PII"],
        "rule": None,
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rules: [", r"rules\.yaml: not valid YAML"),
        ("- just a list", r"rules\.yaml: expected a mapping with a 'rules' list"),
        (
            "rules: [{match: {service: x}, sensitivity: secret}]",
            r"rules\.yaml: invalid classification rules: rules\.0\.sensitivity",
        ),
        (
            "rules: [{match: {service: x}, sensitivity: public, data_categories: [PCII]}]",
            r"rules\.0\.data_categories\.0",
        ),
        ("rules: [{match: {host: x}, sensitivity: public}]", r"rules\.0\.match\.host"),
        ("rules: [{match: {service: x}}]", r"rules\.0\.sensitivity: Field required"),
        (
            "rules: [{match: {resource_id: {regex: '('}}, sensitivity: public}]",
            r"rules\[0\]\.match\.resource_id: bad regex",
        ),
        ("rules: [{match: {service: []}, sensitivity: public}]", r"an empty list matches nothing"),
    ],
)
def test_invalid_rules_name_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        _enricher(tmp_path, text)


def test_classifications_are_cached(tmp_path: Path) -> None:
    enricher = _enricher(tmp_path)
    for _ in range(4):
        _classify(enricher, "payments-db", "table", "cards")
    info = enricher.watched.current.classify.cache_info()  # type: ignore[attr-defined]
    assert (info.misses, info.hits) == (1, 3)


def test_changed_rules_are_reloaded(tmp_path: Path) -> None:
    enricher = _enricher(tmp_path)
    assert _classify(enricher, "crm", "customer", "c-1")["sensitivity"] == "internal"
    new = tmp_path / "new.yaml"
    new.write_text("rules: [{name: crm, match: {service: crm}, sensitivity: confidential}]")
    new.replace(tmp_path / "rules.yaml")
    assert enricher.watched.reload_if_changed()
    assert _classify(enricher, "crm", "customer", "c-1")["rule"] == "crm"


@pytest.mark.parametrize(
    ("service", "rtype", "rid", "sensitivity", "categories"),
    [
        ("payments-db", "table", "cards", "restricted", ["PCI"]),
        ("payments-db", "table", "transactions", "restricted", ["PCI"]),
        ("payments-db", "table", "merchants", "confidential", []),
        ("hr-portal", "employee_record", "emp-0042", "confidential", ["PII"]),
        ("crm", "customer", "cust-00001", "confidential", ["PII"]),
        ("billing-api", "invoice", "inv-00001", "confidential", ["PII"]),
        ("object-store", "bucket", "backups", "restricted", ["PII", "PCI"]),
        ("object-store", "bucket", "public-assets", "public", []),
        ("object-store", "bucket", "logs", "internal", []),
        ("sso", "application", "portal", "internal", []),
    ],
)
def test_shipped_rules_classify_the_simulators_resources(
    service: str, rtype: str, rid: str, sensitivity: str, categories: list[str]
) -> None:
    enricher = ClassificationEnricher(rules_file(), watch=False)
    label = _classify(enricher, service, rtype, rid)
    assert (label["sensitivity"], label["data_categories"]) == (sensitivity, categories)
