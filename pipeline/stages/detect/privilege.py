"""Detectors 8-10, on who may do what: privilege escalation, dormant or terminated
accounts, first access to a restricted resource.

- **Privilege escalation** (``privilege_escalation``): a successful grant or
  role change (``grant_actions``) of a privileged role (``privileged_roles``,
  case-insensitive globs; the role is ``attributes.role``, else the resource
  id of a ``role_resource_types`` resource); or a successful privileged action
  (``privileged_actions`` on ``privileged_services``) by a user the directory
  marks as not privileged. Nothing is kept but the open alert.
- **Dormant or terminated account** (``dormant_account``): activity after at
  least ``dormant_days`` of silence, or by a user the directory marks
  ``terminated``. Keeps the time of the user's latest event.
- **First access to a restricted resource** (``first_restricted_access``): a
  successful access to a resource of a ``sensitivities`` class the user has
  not accessed before; silent until the user's history spans ``learn_days``.
  Keeps the resources seen (at most ``max_tracked``, least recent forgotten).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from pipeline.stages.detect.alerts import AlertState
from pipeline.stages.detect.base import US, Detector, EnrichedEventView, Match, span, when
from pipeline.stages.detect.rules import (
    AlertRules,
    DormantRule,
    FirstRestrictedRule,
    PrivilegeEscalationRule,
)

DAY_US = 86_400 * US


class PrivilegeEscalation(Detector[int]):
    name = "privilege_escalation"
    title_text = "Privilege escalation"

    def __init__(
        self, rule: PrivilegeEscalationRule, alerts: AlertRules, lateness_s: float = 3600.0
    ):
        super().__init__(rule, alerts, lateness_s)
        self.grants = frozenset(rule.grant_actions)
        self.role_types = frozenset(rule.role_resource_types)
        self.roles = tuple(p.lower() for p in rule.privileged_roles)
        self.actions = frozenset(rule.privileged_actions)
        self.services = frozenset(rule.privileged_services)

    def relevant(self, event: EnrichedEventView) -> bool:
        if event.outcome != "success":
            return False
        return event.action in self.grants or (
            event.action in self.actions and event.service in self.services
        )

    def new_data(self) -> int:
        return 0

    def dump_data(self, data: int) -> Any:
        return data

    def load_data(self, raw: Any) -> int:
        return int(raw)

    def role_of(self, event: EnrichedEventView) -> str | None:
        role = event.attributes.get("role")
        if role is None and event.resource_type in self.role_types:
            role = event.resource_id
        return role

    def update(self, data: int, event: EnrichedEventView) -> Match | None:
        facts: dict[str, str] = {}
        if event.action in self.grants:
            role = self.role_of(event)
            if role and any(fnmatch.fnmatchcase(role.lower(), p) for p in self.roles):
                facts = {
                    "kind": "privileged_grant",
                    "role": role,
                    "target": event.attributes.get("target_user") or "",
                }
        elif event.privileged is False:
            facts = {
                "kind": "unprivileged_admin",
                "action": event.action,
                "resource": f"{event.service}/{event.resource_id}",
            }
        if not facts:
            return None
        return Match(
            at_us=event.occurred_us,
            first_us=event.occurred_us,
            last_us=event.occurred_us,
            event_ids=[event.event_id],
            count=1,
            facts=facts,
            actor=event.actor_id,
            source_ip=event.source_ip,
        )

    def summary(self, alert: AlertState, entity: str) -> str:
        f = alert.facts
        if f.get("kind") == "privileged_grant":
            target = f" to {f['target']}" if f.get("target") else ""
            what = f"granted the privileged role {f.get('role')}{target}"
            why = "A new administrator is how an intruder keeps control"
        else:
            what = f"performed the privileged action {f.get('action')} on {f.get('resource')}"
            why = "The identity directory does not mark this user as privileged"
        return (
            f"User {entity} {what} at {when(alert.first_us)} from "
            f"{alert.source_ip or 'an unknown address'}; {alert.event_count} such events are "
            f"in this alert up to {when(alert.last_us)}. {why}; confirm the change was "
            "approved."
        )


class DormantAccount(Detector[list[int]]):
    """Keeps ``[latest occurred_at]`` of the user (0: none yet)."""

    name = "dormant_account"
    title_text = "Dormant or terminated account used"

    def __init__(self, rule: DormantRule, alerts: AlertRules, lateness_s: float = 3600.0):
        super().__init__(rule, alerts, lateness_s)
        self.dormant_us = int(rule.dormant_days * DAY_US)
        self.terminated_severity = rule.terminated_severity
        self.window_s = int(rule.dormant_days * 86_400)

    def relevant(self, event: EnrichedEventView) -> bool:
        return True

    def new_data(self) -> list[int]:
        return [0]

    def dump_data(self, data: list[int]) -> Any:
        return data[0]

    def load_data(self, raw: Any) -> list[int]:
        return [int(raw)]

    def update(self, data: list[int], event: EnrichedEventView) -> Match | None:
        t, latest = event.occurred_us, data[0]
        data[0] = max(latest, t)
        if event.employment_status == "terminated":
            facts = {"kind": "terminated"}
            severity: str | None = self.terminated_severity
        elif latest and t - latest >= self.dormant_us:
            facts = {"kind": "dormant", "silent_days": f"{(t - latest) / DAY_US:.0f}"}
            severity = None
        else:
            return None
        return Match(
            at_us=t,
            first_us=t,
            last_us=t,
            event_ids=[event.event_id],
            count=1,
            facts=facts,
            severity=severity,
            actor=event.actor_id,
            source_ip=event.source_ip,
        )

    def summary(self, alert: AlertState, entity: str) -> str:
        f = alert.facts
        if f.get("kind") == "terminated":
            what = "whom the identity directory marks as terminated"
        else:
            what = f"silent for {f.get('silent_days')} days before"
        return (
            f"The account {entity}, {what}, was used at {when(alert.first_us)} from "
            f"{alert.source_ip or 'an unknown address'}; {alert.event_count} events are in this "
            f"alert up to {when(alert.last_us)}. Accounts nobody uses, or of people who have "
            "left, are a favourite way in; disable the account if the use was not expected."
        )


class FirstRestricted:
    """What :class:`FirstRestrictedAccess` keeps."""

    __slots__ = ("first_us", "seen")

    def __init__(self, first_us: int, seen: dict[str, int]) -> None:
        self.first_us = first_us
        self.seen = seen  # resource → last access


class FirstRestrictedAccess(Detector[FirstRestricted]):
    name = "first_restricted_access"
    title_text = "First access to a restricted resource"

    def __init__(self, rule: FirstRestrictedRule, alerts: AlertRules, lateness_s: float = 3600.0):
        super().__init__(rule, alerts, lateness_s)
        self.sensitivities = frozenset(rule.sensitivities)
        self.learn_us = int(rule.learn_days * DAY_US)
        self.cap = rule.max_tracked

    def relevant(self, event: EnrichedEventView) -> bool:
        return event.actor_type == "user"

    def new_data(self) -> FirstRestricted:
        return FirstRestricted(0, {})

    def dump_data(self, data: FirstRestricted) -> Any:
        return [data.first_us, data.seen]

    def load_data(self, raw: Any) -> FirstRestricted:
        return FirstRestricted(int(raw[0]), {str(k): int(v) for k, v in raw[1].items()})

    def update(self, data: FirstRestricted, event: EnrichedEventView) -> Match | None:
        t = event.occurred_us
        if not data.first_us or t < data.first_us:
            data.first_us = t
        if event.outcome != "success" or event.sensitivity not in self.sensitivities:
            return None
        resource = f"{event.service}/{event.resource_type}/{event.resource_id}"
        new = resource not in data.seen
        data.seen[resource] = max(data.seen.get(resource, 0), t)
        if len(data.seen) > self.cap:
            del data.seen[min(data.seen, key=data.seen.__getitem__)]
        if not new or t - data.first_us < self.learn_us:
            return None
        return Match(
            at_us=t,
            first_us=t,
            last_us=t,
            event_ids=[event.event_id],
            count=1,
            facts={
                "resource": resource,
                "sensitivity": event.sensitivity or "",
                "action": event.action,
                "history": span(data.first_us, t),
            },
            actor=event.actor_id,
            source_ip=event.source_ip,
        )

    def summary(self, alert: AlertState, entity: str) -> str:
        f = alert.facts
        return (
            f"User {entity} accessed the {f.get('sensitivity')} resource {f.get('resource')} "
            f"({f.get('action')}) at {when(alert.first_us)} for the first time in "
            f"{f.get('history')} of history; {alert.event_count} first accesses are in this "
            f"alert up to {when(alert.last_us)}. Restricted data is reached by few; make sure "
            "this user has a reason to."
        )
