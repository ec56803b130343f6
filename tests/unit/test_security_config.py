"""The shipped security plugin configuration: its shape, and every field against the templates."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.access import PLUGIN_ROLES
from pipeline.search.query import mapped_fields
from pipeline.settings import Settings
from pipeline.sinks.opensearch import ALERTS_TEMPLATE, EVENTS_TEMPLATE, load_template

SECURITY = Path(__file__).resolve().parents[2] / "deploy" / "opensearch" / "security"
WRITE_OR_DELETE = ("indices:data/write", "indices:admin/delete", "write", "delete", "crud", "*")


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SECURITY / name).read_text())
    return loaded


def _fields(template: str) -> set[str]:
    return set(mapped_fields(load_template(template)["template"]["mappings"]["properties"]))


def _actions(role: dict[str, Any]) -> list[str]:
    return [a for p in role["index_permissions"] for a in p["allowed_actions"]]


ROLES = _load("roles.yml")
EVENT_FIELDS = _fields(EVENTS_TEMPLATE) | {"@timestamp"}
ALERT_FIELDS = _fields(ALERTS_TEMPLATE) | {"@timestamp"}


def test_each_file_is_plugin_configuration_version_2() -> None:
    for name, kind in (
        ("roles.yml", "roles"),
        ("roles_mapping.yml", "rolesmapping"),
        ("audit.yml", "audit"),
    ):
        assert _load(name)["_meta"] == {"type": kind, "config_version": 2}


def test_the_four_roles_are_defined_and_mapped() -> None:
    roles = {k for k in ROLES if k != "_meta"}
    assert roles == set(PLUGIN_ROLES)
    mapping = _load("roles_mapping.yml")
    assert {k for k in mapping if k != "_meta"} == roles
    for name in roles:
        assert mapping[name]["backend_roles"] or mapping[name]["users"], name
        for perm in ROLES[name]["index_permissions"]:
            assert set(perm) <= {"index_patterns", "allowed_actions", "masked_fields", "fls"}


def test_index_patterns_cover_the_pipeline_indices_and_nothing_else() -> None:
    settings = Settings().opensearch
    ours = (settings.events_index_prefix, settings.alerts_index_prefix, "audit-restore")
    for name, role in ROLES.items():
        if name == "_meta":
            continue
        for perm in role["index_permissions"]:
            for pattern in perm["index_patterns"]:
                assert pattern.rstrip("-*") in ours, (name, pattern)
    for reader in ("auditstream_auditor", "auditstream_analyst"):
        patterns = ROLES[reader]["index_permissions"][0]["index_patterns"]
        for index in ("audit-events", "audit-events-2025.03.01", "audit-alerts-2025.03"):
            assert any(fnmatch.fnmatchcase(index, p) for p in patterns), (reader, index)


def test_the_analyst_masks_every_sensitive_field_and_its_multi_fields() -> None:
    (perm,) = ROLES["auditstream_analyst"]["index_permissions"]
    masked = set(perm["masked_fields"])
    for field in Settings().access.sensitive_fields:
        covering = [m for m in masked if fnmatch.fnmatchcase(field, m)]
        assert covering, f"sensitive field {field} is not masked for analysts"
        subfields = {f for f in EVENT_FIELDS | ALERT_FIELDS if f.startswith(field + ".")}
        assert subfields <= masked, f"{field}: multi-fields {subfields - masked} not masked"


@pytest.mark.parametrize("key", ["masked_fields", "fls"])
def test_every_field_named_exists_in_an_index_template(key: str) -> None:
    for name, role in ROLES.items():
        if name == "_meta":
            continue
        for perm in role["index_permissions"]:
            for field in perm.get(key, []):
                plain = field.lstrip("~")
                assert plain in EVENT_FIELDS | ALERT_FIELDS, f"{name}: {key} {field} is not mapped"


def test_roles_grant_only_what_they_are_for() -> None:
    auditor = _actions(ROLES["auditstream_auditor"])
    analyst = _actions(ROLES["auditstream_analyst"])
    for actions in (auditor, analyst):
        assert "read" in actions
        assert not [a for a in actions if a.startswith(WRITE_OR_DELETE)], actions
    pipeline = ROLES["auditstream_pipeline"]["index_permissions"]
    writes = [a for p in pipeline if "fls" not in p for a in p["allowed_actions"]]
    assert "indices:data/write/index" in writes
    assert not [a for a in writes if "read" in a or "delete" in a]
    reads = [p for p in pipeline if "fls" in p]
    assert all(p["fls"] == ["event.hash"] for p in reads)  # only the content hash, for 409s
    retention = _actions(ROLES["auditstream_retention"])
    assert "indices:admin/delete" in retention
    assert not [a for a in retention if a.startswith("indices:data/write") or a == "read"]
    (perm,) = ROLES["auditstream_retention"]["index_permissions"]
    assert "fls" in perm  # reads only the fields the expiry and archive checks need


def test_reads_of_the_audit_trail_are_logged() -> None:
    config = _load("audit.yml")["config"]
    assert config["enabled"] is True
    compliance = config["compliance"]
    assert compliance["enabled"] is True and compliance["read_metadata_only"] is False
    watched = compliance["read_watched_fields"]
    for index in ("audit-events-2025.03.01", "audit-alerts-2025.03"):
        patterns = [p for p in watched if fnmatch.fnmatchcase(index, p)]
        assert patterns and all(watched[p] == ["*"] for p in patterns)
    assert compliance["read_ignore_users"] == []
