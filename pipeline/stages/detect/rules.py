"""Detection rules: thresholds, windows, severities and tags, from a YAML file.

``deploy/detection/rules.yaml`` holds the defaults, which follow established
practice (NIST SP 800-63B/800-53 AC-7 for failed attempts, PCI DSS 8.2.6 for
90 days of inactivity, 900 km/h for impossible travel). Every key is optional:
a file that names one detector and one threshold changes only that. An unknown
key, a wrong type or an impossible value is a :class:`ConfigError` naming the
file and the key.

Common keys of every detector: ``enabled``, ``severity``, ``mitre`` (ATT&CK
technique ids), ``compliance`` (control ids) and ``suppression_s`` (an open
alert absorbs later matches for that long after it opened; default from
``alerts.suppression_s``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from pipeline.errors import ConfigError

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
ACCESS_CONTROL = ["PCI DSS 10.2.4", "NIST SP 800-53 AC-7", "ISO/IEC 27001 A.8.5"]
ACCOUNT_MONITORING = ["NIST SP 800-53 AC-2(12)", "ISO/IEC 27001 A.8.16"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Model):
    enabled: bool = True
    severity: Severity = "medium"
    mitre: list[str] = Field(default_factory=list)
    compliance: list[str] = Field(default_factory=list)
    suppression_s: float | None = Field(None, gt=0)


class BruteForceRule(Rule):
    severity: Severity = "high"
    threshold: int = Field(8, ge=1)
    window_s: float = Field(120.0, gt=0)
    max_tracked: int = Field(64, ge=1)  # recent failures kept per entity
    mitre: list[str] = Field(default_factory=lambda: ["T1110.001"])
    compliance: list[str] = Field(default_factory=lambda: list(ACCESS_CONTROL))


class SprayingRule(Rule):
    severity: Severity = "high"
    distinct_users: int = Field(5, ge=2)
    window_s: float = Field(1200.0, gt=0)
    max_tracked: int = Field(128, ge=2)
    mitre: list[str] = Field(default_factory=lambda: ["T1110.003"])
    compliance: list[str] = Field(default_factory=lambda: list(ACCESS_CONTROL))


class SuccessAfterFailuresRule(Rule):
    severity: Severity = "critical"
    failures: int = Field(5, ge=1)
    window_s: float = Field(600.0, gt=0)
    max_tracked: int = Field(64, ge=1)
    mitre: list[str] = Field(default_factory=lambda: ["T1110", "T1078"])
    compliance: list[str] = Field(default_factory=lambda: [*ACCESS_CONTROL, "PCI DSS 10.2.1"])


class ImpossibleTravelRule(Rule):
    severity: Severity = "high"
    max_speed_kmh: float = Field(900.0, gt=0)
    min_distance_km: float = Field(50.0, ge=0)
    max_tracked: int = Field(8, ge=2)  # recent geolocated logins kept per user
    mitre: list[str] = Field(default_factory=lambda: ["T1078"])
    compliance: list[str] = Field(default_factory=lambda: list(ACCOUNT_MONITORING))


class NewLocationRule(Rule):
    severity: Severity = "medium"
    lookback_days: float = Field(14.0, gt=0)
    learn_days: float = Field(14.0, ge=0)  # silent until the user's history is this long
    max_tracked: int = Field(32, ge=1)  # countries and ASNs kept per user, each
    mitre: list[str] = Field(default_factory=lambda: ["T1078"])
    compliance: list[str] = Field(default_factory=lambda: list(ACCOUNT_MONITORING))


class OffHoursRule(Rule):
    severity: Severity = "medium"
    min_events: int = Field(200, ge=1)  # silent until the histogram holds this many
    min_days: float = Field(7.0, ge=0)  # ... over at least this many days
    min_share: float = Field(0.01, gt=0, lt=1)  # the hour (± neighbours) holds less: off-hours
    neighbour_hours: int = Field(1, ge=0, le=11)
    max_total: int = Field(20_000, ge=100)  # halve the histogram beyond this (forgets slowly)
    mitre: list[str] = Field(default_factory=lambda: ["T1078"])
    compliance: list[str] = Field(default_factory=lambda: list(ACCOUNT_MONITORING))


class MassAccessRule(Rule):
    severity: Severity = "high"
    actions: list[str] = Field(default_factory=lambda: ["read", "download", "export", "list"])
    floor_per_min: int = Field(50, ge=1)
    z: float = Field(4.0, gt=0)
    ewma_alpha: float = Field(0.01, gt=0, le=1)  # per minute
    min_std: float = Field(1.0, gt=0)
    max_tracked: int = Field(240, ge=60)  # one-second buckets kept per user
    mitre: list[str] = Field(default_factory=lambda: ["T1213", "T1530"])
    compliance: list[str] = Field(
        default_factory=lambda: ["PCI DSS 10.2.1", "NIST SP 800-53 SI-4", "ISO/IEC 27001 A.8.12"]
    )


class PrivilegeEscalationRule(Rule):
    severity: Severity = "critical"
    grant_actions: list[str] = Field(
        default_factory=lambda: ["grant", "assign_role", "role_change", "add_member"]
    )
    role_resource_types: list[str] = Field(default_factory=lambda: ["role", "group"])
    privileged_roles: list[str] = Field(  # globs, case-insensitive
        default_factory=lambda: [
            "*admin*",
            "root",
            "owner",
            "superuser",
            "sudo*",
            "security*",
            "*privileged*",
        ]
    )
    privileged_actions: list[str] = Field(default_factory=lambda: ["admin"])
    privileged_services: list[str] = Field(default_factory=lambda: ["admin-console"])
    mitre: list[str] = Field(default_factory=lambda: ["T1098", "T1078"])
    compliance: list[str] = Field(
        default_factory=lambda: ["PCI DSS 10.2.2", "PCI DSS 10.2.5", "NIST SP 800-53 AC-6(9)"]
    )


class DormantRule(Rule):
    severity: Severity = "high"
    terminated_severity: Severity = "critical"
    dormant_days: float = Field(90.0, gt=0)
    mitre: list[str] = Field(default_factory=lambda: ["T1078"])
    compliance: list[str] = Field(
        default_factory=lambda: ["PCI DSS 8.2.6", "NIST SP 800-53 AC-2(3)"]
    )


class FirstRestrictedRule(Rule):
    severity: Severity = "medium"
    sensitivities: list[str] = Field(default_factory=lambda: ["restricted"])
    learn_days: float = Field(7.0, ge=0)  # silent until the user's history is this long
    max_tracked: int = Field(64, ge=1)  # restricted resources remembered per user
    mitre: list[str] = Field(default_factory=lambda: ["T1213"])
    compliance: list[str] = Field(default_factory=lambda: ["PCI DSS 10.2.1", "HIPAA 164.312(b)"])


class AlertRules(_Model):
    suppression_s: float = Field(3600.0, gt=0)  # one open alert per detector+entity this long
    max_evidence: int = Field(20, ge=1)  # event ids carried by an alert
    emit_first: int = Field(10, ge=0)  # every one of the first N folds is a new revision ...
    update_every_s: float = Field(60.0, gt=0)  # ... then powers of two, or this much later
    retention_days: float = Field(400.0, gt=0)  # a user silent this long is swept
    address_retention_days: float = Field(2.0, gt=0)  # a source address silent this long is swept


class Detectors(_Model):
    brute_force_user: BruteForceRule = BruteForceRule()
    brute_force_ip: BruteForceRule = BruteForceRule()
    password_spraying: SprayingRule = SprayingRule()
    success_after_failures: SuccessAfterFailuresRule = SuccessAfterFailuresRule()
    impossible_travel: ImpossibleTravelRule = ImpossibleTravelRule()
    new_country_or_asn: NewLocationRule = NewLocationRule()
    off_hours: OffHoursRule = OffHoursRule()
    mass_access: MassAccessRule = MassAccessRule()
    privilege_escalation: PrivilegeEscalationRule = PrivilegeEscalationRule()
    dormant_account: DormantRule = DormantRule()
    first_restricted_access: FirstRestrictedRule = FirstRestrictedRule()


class Rules(_Model):
    version: Literal[1] = 1
    alerts: AlertRules = AlertRules()
    detectors: Detectors = Detectors()

    @model_validator(mode="after")
    def _users_outlive_dormancy(self) -> Rules:
        dormant = self.detectors.dormant_account
        if dormant.enabled and self.alerts.retention_days <= dormant.dormant_days:
            raise ValueError(
                f"alerts.retention_days ({self.alerts.retention_days:g}) must exceed "
                f"detectors.dormant_account.dormant_days ({dormant.dormant_days:g}): a user's "
                "state is swept after that much silence, so a dormant account would go unseen"
            )
        return self


def rules_file() -> Path:
    """``deploy/detection/rules.yaml`` in a checkout, or the packaged copy."""
    here = Path(__file__).resolve().parents[3]
    for candidate in (here / "deploy" / "detection", here / "pipeline" / "_detection"):
        if (candidate / "rules.yaml").is_file():
            return candidate / "rules.yaml"
    raise FileNotFoundError(f"no deploy/detection/rules.yaml near {here}")


def load_rules(path: Path | None = None) -> Rules:
    """The rules in ``path``; with None, the built-in defaults (the same as the shipped file)."""
    if path is None:
        return Rules()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the detection rules: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return Rules.model_validate(data or {})
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "file"
        raise ConfigError(f"{path}: {where}: {err['msg']}") from None
