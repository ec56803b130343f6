"""Detectors 1-3, on failed logins: brute force, password spraying, success after failures.

- **Brute force** (``brute_force_user``, ``brute_force_ip``): at least
  ``threshold`` failed logins for one user, or from one source address, within
  ``window_s``. Keeps the most recent failures (time, event id), at most
  ``max_tracked``.
- **Password spraying** (``password_spraying``, by source address): one
  address failing against at least ``distinct_users`` users within
  ``window_s``. Keeps recent failures (time, user, event id).
- **Success after failures** (``success_after_failures``, by user): a
  successful login with at least ``failures`` failed logins for that user in
  the ``window_s`` before it, whichever arrives last.
"""

from __future__ import annotations

from typing import Any

from pipeline.stages.detect.alerts import AlertState
from pipeline.stages.detect.base import (
    US,
    D,
    Detector,
    EnrichedEventView,
    Match,
    insert,
    span,
    trim,
    when,
    window_with,
)
from pipeline.stages.detect.rules import (
    AlertRules,
    BruteForceRule,
    SprayingRule,
    SuccessAfterFailuresRule,
)

Failures = list[tuple[int, str]]  # (occurred_us, event_id), in time order
WindowRule = BruteForceRule | SprayingRule | SuccessAfterFailuresRule


def _load_pairs(raw: Any) -> Failures:
    return [(int(t), str(k)) for t, k in raw]


class SlidingWindow(Detector[D]):
    """A rule over a sliding window of recent events, of which it keeps ``max_tracked``."""

    def __init__(self, rule: WindowRule, alerts: AlertRules, lateness_s: float = 3600.0):
        super().__init__(rule, alerts, lateness_s)
        self.window_us = int(rule.window_s * US)
        self.cap = rule.max_tracked
        self.window_s = int(rule.window_s)
        self.minutes = int(rule.window_s // 60)


class BruteForce(SlidingWindow[Failures]):
    """Too many failed logins in a sliding window, for one user or one source address."""

    name = "brute_force_user"
    title_text = "Brute force against user"

    def __init__(self, rule: BruteForceRule, alerts: AlertRules, lateness_s: float = 3600.0):
        super().__init__(rule, alerts, lateness_s)
        self.threshold = rule.threshold

    def relevant(self, event: EnrichedEventView) -> bool:
        return event.failed_login

    def new_data(self) -> Failures:
        return []

    def dump_data(self, data: Failures) -> Any:
        return data

    def load_data(self, raw: Any) -> Failures:
        return _load_pairs(raw)

    def update(self, data: Failures, event: EnrichedEventView) -> Match | None:
        index = insert(data, (event.occurred_us, event.event_id))
        found = window_with(data, index, self.threshold, self.window_us)
        match = None
        if found is not None:
            lo, hi = found
            match = Match(
                at_us=event.occurred_us,
                first_us=data[lo][0],
                last_us=data[hi][0],
                event_ids=[k for _, k in data[lo : hi + 1]],
                count=self.threshold,
                facts=self.facts(event),
                actor=event.actor_id,
                source_ip=event.source_ip,
            )
        trim(data, data[-1][0] - self.window_us - self.lateness_us, self.cap)
        return match

    def facts(self, event: EnrichedEventView) -> dict[str, str]:
        return {"last_source_ip": event.source_ip or "", "last_reason": event.reason or ""}

    def summary(self, alert: AlertState, entity: str) -> str:
        more = f" and {alert.folded} more failures followed" if alert.folded else ""
        return (
            f"User {entity} failed to log in {self.threshold} times within "
            f"{self.window_s} seconds, from {alert.source_ip or 'an unknown address'} first; "
            f"between {when(alert.first_us)} and {when(alert.last_us)} "
            f"({span(alert.first_us, alert.last_us)}) {alert.event_count} failures were "
            f"counted{more}. So many failures so close together usually mean someone is "
            "guessing the password; check whether the account was then used successfully."
        )


class BruteForceByIp(BruteForce):
    name = "brute_force_ip"
    entity_type = "source_ip"
    title_text = "Brute force from address"

    def facts(self, event: EnrichedEventView) -> dict[str, str]:
        return {"last_user": event.actor_id, "last_reason": event.reason or ""}

    def summary(self, alert: AlertState, entity: str) -> str:
        more = f" and {alert.folded} more followed" if alert.folded else ""
        return (
            f"The address {entity} failed {self.threshold} logins within {self.window_s} "
            f"seconds, against {alert.actor or 'an unknown user'} first; between "
            f"{when(alert.first_us)} and {when(alert.last_us)} {alert.event_count} failures "
            f"were counted{more}. An address that fails this often is usually running a "
            "password-guessing tool; consider blocking it."
        )


Attempts = list[tuple[int, str, str]]  # (occurred_us, user, event_id), in time order


class PasswordSpraying(SlidingWindow[Attempts]):
    """One source address failing against many distinct users."""

    name = "password_spraying"
    entity_type = "source_ip"
    title_text = "Password spraying from address"

    def __init__(self, rule: SprayingRule, alerts: AlertRules, lateness_s: float = 3600.0):
        super().__init__(rule, alerts, lateness_s)
        self.users = rule.distinct_users

    def relevant(self, event: EnrichedEventView) -> bool:
        return event.failed_login

    def new_data(self) -> Attempts:
        return []

    def dump_data(self, data: Attempts) -> Any:
        return data

    def load_data(self, raw: Any) -> Attempts:
        return [(int(t), str(u), str(k)) for t, u, k in raw]

    def update(self, data: Attempts, event: EnrichedEventView) -> Match | None:
        t = event.occurred_us
        insert(data, (t, event.actor_id, event.event_id))
        found = self._window(data, t)
        match = None
        if found is not None:
            first_us, last_us, users = found
            match = Match(
                at_us=t,
                first_us=first_us,
                last_us=last_us,
                event_ids=list(users.values()),
                count=len(users),
                facts={"users": ",".join(sorted(users)[:10]), "distinct_users": str(len(users))},
                actor=event.actor_id,
                source_ip=event.source_ip,
            )
        trim(data, data[-1][0] - self.window_us - self.lateness_us, self.cap)
        return match

    def _window(self, data: Attempts, t: int) -> tuple[int, int, dict[str, str]] | None:
        """The first window of the rule's length around ``t`` with enough distinct users."""
        in_order = data[-1][0] <= t  # then the window ending at t holds every other one
        for a, (start, _, _) in enumerate(data):
            if start < t - self.window_us:
                continue
            if start > t:
                break
            users: dict[str, str] = {}
            last = start
            for at, user, event_id in data[a:]:
                if at > start + self.window_us:
                    break
                users.setdefault(user, event_id)
                last = at
            if len(users) >= self.users:
                return start, last, users
            if in_order:
                break
        return None

    def summary(self, alert: AlertState, entity: str) -> str:
        return (
            f"The address {entity} failed to log in as {alert.facts.get('distinct_users')} "
            f"different users within {self.minutes} minutes (users: "
            f"{alert.facts.get('users')}), between {when(alert.first_us)} and "
            f"{when(alert.last_us)}; {alert.event_count} attempts are counted in this alert. "
            "Trying a few common passwords against many accounts is password spraying; "
            "check those accounts for a later successful login from this address."
        )


class SuccessAfterFailures(SlidingWindow[dict[str, Failures]]):
    """A successful login right after a run of failures: a guessed password."""

    name = "success_after_failures"
    title_text = "Login succeeded after repeated failures"

    def __init__(
        self, rule: SuccessAfterFailuresRule, alerts: AlertRules, lateness_s: float = 3600.0
    ):
        super().__init__(rule, alerts, lateness_s)
        self.failures = rule.failures

    def relevant(self, event: EnrichedEventView) -> bool:
        return event.action == "login" and event.outcome in ("success", "failure")

    def new_data(self) -> dict[str, Failures]:
        return {"f": [], "s": []}

    def dump_data(self, data: dict[str, Failures]) -> Any:
        return data

    def load_data(self, raw: Any) -> dict[str, Failures]:
        return {"f": _load_pairs(raw["f"]), "s": _load_pairs(raw["s"])}

    def update(self, data: dict[str, Failures], event: EnrichedEventView) -> Match | None:
        failures, successes = data["f"], data["s"]
        t = event.occurred_us
        match = None
        if event.outcome == "failure":
            insert(failures, (t, event.event_id))
            # A late failure may complete the run before a success already seen.
            for at, success_id in successes:
                if t <= at <= t + self.window_us:
                    before = [f for f in failures if at - self.window_us <= f[0] <= at]
                    if len(before) == self.failures:
                        match = self._match(event, before, at, success_id)
                        break
        else:
            before = [f for f in failures if t - self.window_us <= f[0] <= t]
            if len(before) >= self.failures:
                match = self._match(event, before, t, event.event_id)
            insert(successes, (t, event.event_id))
        latest = max(failures[-1][0] if failures else 0, successes[-1][0] if successes else 0)
        horizon = latest - self.window_us - self.lateness_us
        trim(failures, horizon, self.cap)
        trim(successes, horizon, 16)
        return match

    def _match(
        self, event: EnrichedEventView, before: Failures, success_us: int, success_id: str
    ) -> Match:
        return Match(
            at_us=success_us,
            first_us=before[0][0],
            last_us=max(success_us, before[-1][0]),
            event_ids=[success_id, *(k for _, k in before[-self.failures :])],
            count=len(before) + 1,
            facts={"failures_before": str(len(before))},
            actor=event.actor_id,
            source_ip=event.source_ip,
        )

    def summary(self, alert: AlertState, entity: str) -> str:
        return (
            f"User {entity} logged in successfully at {when(alert.last_us)} from "
            f"{alert.source_ip or 'an unknown address'} after "
            f"{alert.facts.get('failures_before')} failed logins in the "
            f"{self.minutes} minutes before it (from {when(alert.first_us)}). A "
            "success right after a run of failures often means the password was guessed: "
            "confirm with the user and reset the credentials if it was not them."
        )
