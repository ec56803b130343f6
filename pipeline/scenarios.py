"""Labelled attack scenarios to inject into simulated traffic (``auditstream simulate --attacks``).

``scenarios(seed, start, span)`` returns, for a seed, the attacks that begin
in ``[start, start + span)``: one every ``every`` (an hour by default), the
kinds taking turns, each a short burst of access events on the virtual clock,
labelled with the detector(s) that must fire and the entity each keys on::

    for scenario in scenarios(1, start, timedelta(days=7)):
        scenario.kind, scenario.labels, scenario.events

It is pure: the same arguments give the same scenarios, so a test or a bench
can compute what a seeded ``simulate --attacks`` run injected. Victims are the
simulator's own users (same seed, same population), so they have the history
the habit- and place-based detectors learn from; those detectors only judge
users with enough history (14 days for a new country, 7 for off-hours and
restricted resources), so attacks should begin two weeks into the traffic.
:func:`inject` merges scenarios into a :meth:`Simulator.events` stream.

Attack addresses are public but unknown to geo-IP (so they add no place),
except where the place is the point (impossible travel, new country).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.simulate import OFFICE_NETWORK, Actor, Simulator

KINDS = (
    "brute_force_user",
    "brute_force_ip",
    "password_spraying",
    "success_after_failures",
    "impossible_travel",
    "new_country_or_asn",
    "off_hours",
    "mass_access",
    "privilege_escalation",
    "dormant_account",
    "terminated_account",
    "first_restricted_access",
)
# Where a user from one home network goes: far away (impossible travel), and to a
# network of another country or AS (new country or ASN).
FAR = {
    "81.2.69.": "175.16.199.",
    "89.160.20.": "216.160.83.",
    "216.160.83.": "89.160.20.",
    "175.16.199.": "81.2.69.",
    "2.125.160.": "216.160.83.",
    "67.43.156.": "216.160.83.",
}
ELSEWHERE = {
    "81.2.69.": "2.125.160.",
    "89.160.20.": "81.2.69.",
    "216.160.83.": "67.43.156.",
    "175.16.199.": "67.43.156.",
    "2.125.160.": "89.160.20.",
    "67.43.156.": "175.16.199.",
}
DORMANT_DAYS = 120  # silence before a dormant account is used again (the rule says >= 90)


@dataclass(frozen=True)
class Label:
    """A detector that must alert, and the entity (user id or source address) it keys on."""

    detector: str
    entity: str


@dataclass(frozen=True)
class Scenario:
    """One attack: its events in time order and the alerts they must raise.

    ``at`` is when the attack enters the stream; an event that happened earlier
    (a dormant account's last use) is history delivered with it.
    """

    index: int
    kind: str
    at: datetime
    labels: tuple[Label, ...]
    events: tuple[dict[str, Any], ...]


def _network(ip: str) -> str:
    return ip[: ip.rindex(".") + 1]


class _Builder:
    """Makes the events of scenarios; holds the victims used and the addresses handed out."""

    def __init__(self, seed: int, simulator: Simulator) -> None:
        self.rng = random.Random(f"scenarios-{seed}")
        roles = simulator.roles
        users = [a for a in simulator.actors if a.type == "user"]
        active = [a for a in users if a.id not in roles.absent]
        self.anytime = [a for a in active if a.hours is None]
        self.office = [a for a in active if a.hours is not None]
        self.unprivileged = [a for a in self.anytime if a.id not in roles.privileged]
        self.privileged = [a for a in self.anytime if a.id in roles.privileged]
        self.terminated = sorted(roles.terminated & {a.id for a in users})
        self.used: dict[str, set[str]] = {}
        self.addresses = 0

    def victim(self, pool: list[Actor], kind: str) -> Actor:
        """A user from ``pool`` not yet a victim of ``kind`` (all again once each has been).

        A place or a resource is new to a user once only: the same attack on the
        same user again would go unnoticed, rightly.
        """
        used = self.used.setdefault(kind, set())
        fresh = [a for a in pool if a.id not in used]
        if not fresh:
            used -= {a.id for a in pool}
            fresh = pool
        actor = self.rng.choice(fresh)
        used.add(actor.id)
        return actor

    def attacker_ip(self) -> str:
        """A public address geo-IP knows nothing of, new for every use."""
        n = self.addresses
        self.addresses += 1
        return f"185.220.{100 + (n // 254) % 100}.{n % 254 + 1}"

    def event(
        self,
        at: datetime,
        actor: Actor | str,
        action: str,
        *,
        ip: str,
        outcome: str = "success",
        service: str = "sso",
        resource: tuple[str, str] = ("application", "portal"),
        attributes: dict[str, str] | None = None,
        actor_type: str = "user",
    ) -> dict[str, Any]:
        rng = self.rng
        if isinstance(actor, Actor):
            actor_id, actor_type, name = actor.id, actor.type, actor.name
            agent = actor.user_agent
        else:
            actor_id, name = actor, actor
            agent = "python-requests/2.32.3"
        failed = outcome == "failure"
        return {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "schema_version": 1,
            "occurred_at": at,
            "actor": {"id": actor_id, "type": actor_type, "name": name, "tenant": "acme"},
            "action": action,
            "outcome": outcome,
            "reason": ("invalid_password" if action == "login" else "permission_denied")
            if failed
            else None,
            "resource": {"type": resource[0], "id": resource[1], "name": resource[1]},
            "source": {"ip": ip, "port": rng.randint(1024, 65535), "user_agent": agent},
            "service": {
                "name": service,
                "host": f"{service}-{rng.randint(1, 3)}.prod.internal",
                "environment": "production",
            },
            "session_id": f"s-{rng.getrandbits(48):012x}",
            "request_id": f"r-{rng.getrandbits(64):016x}",
            "auth": {"method": "password" if action == "login" else "token", "mfa": False},
            "attributes": attributes or {},
        }

    def office_ip(self) -> str:
        return f"{OFFICE_NETWORK}{self.rng.randint(0, 9)}.{self.rng.randint(1, 254)}"

    def elsewhere(self, table: dict[str, str], actor: Actor) -> str:
        return table[_network(actor.home_ip)] + str(self.rng.randint(1, 254))

    # -- one method per kind: (labels, events) -----------------------------------------

    def brute_force_user(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """9 failed logins in 90 s, each from another address (a botnet)."""
        user = self.victim(self.anytime, "brute_force_user")
        events = [
            self.event(
                t + timedelta(seconds=10 * k),
                user,
                "login",
                ip=self.attacker_ip(),
                outcome="failure",
            )
            for k in range(9)
        ]
        return [Label("brute_force_user", user.id)], events

    def brute_force_ip(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """10 failed logins in 90 s from one address, against 3 users (none 8 times)."""
        ip = self.attacker_ip()
        users = [self.victim(self.anytime, "brute_force_ip") for _ in range(3)]
        events = [
            self.event(
                t + timedelta(seconds=10 * k), users[k % 3], "login", ip=ip, outcome="failure"
            )
            for k in range(10)
        ]
        return [Label("brute_force_ip", ip)], events

    def password_spraying(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """One address failing once each against 6 users over 10 minutes."""
        ip = self.attacker_ip()
        events = [
            self.event(
                t + timedelta(minutes=2 * k),
                self.victim(self.anytime, "password_spraying"),
                "login",
                ip=ip,
                outcome="failure",
            )
            for k in range(6)
        ]
        return [Label("password_spraying", ip)], events

    def success_after_failures(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """6 failed logins in 4 minutes, then a success, from one address."""
        user = self.victim(self.anytime, "success_after_failures")
        ip = self.attacker_ip()
        events = [
            self.event(t + timedelta(seconds=45 * k), user, "login", ip=ip, outcome="failure")
            for k in range(6)
        ]
        events.append(self.event(t + timedelta(minutes=5), user, "login", ip=ip))
        return [Label("success_after_failures", user.id)], events

    def impossible_travel(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """A login from home, then 20 minutes later one from another continent."""
        user = self.victim(self.anytime, "impossible_travel")
        events = [
            self.event(t, user, "login", ip=user.home_ip),
            self.event(t + timedelta(minutes=20), user, "login", ip=self.elsewhere(FAR, user)),
        ]
        labels = [Label("impossible_travel", user.id), Label("new_country_or_asn", user.id)]
        return labels, events

    def new_country_or_asn(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """A read from a network (and mostly a country) the user has not used."""
        user = self.victim(self.anytime, "new_country_or_asn")
        ip = self.elsewhere(ELSEWHERE, user)
        events = [self.event(t, user, "read", ip=ip, service="crm", resource=("customer", "c-1"))]
        return [Label("new_country_or_asn", user.id)], events

    def off_hours(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """An office-hours user active in the middle of their night (the time moves there)."""
        for shift in range(24):
            moment = t + timedelta(hours=shift)
            near = {(moment.hour + k) % 24 for k in (-1, 0, 1)}
            pool = [a for a in self.office if a.hours is not None and not near & a.hours]
            if pool:
                break
        else:
            raise ValueError("no user keeps office hours: off-hours cannot be simulated")
        user = self.victim(pool, "off_hours")
        events = [
            self.event(moment, user, "login", ip=user.home_ip),
            self.event(
                moment + timedelta(minutes=1),
                user,
                "read",
                ip=user.home_ip,
                service="crm",
                resource=("customer", "cust-00001"),
            ),
        ]
        return [Label("off_hours", user.id)], events

    def mass_access(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """70 customer records read in under a minute."""
        user = self.victim(self.anytime, "mass_access")
        ip = self.office_ip()
        events = [
            self.event(
                t + timedelta(milliseconds=800 * k),
                user,
                "read",
                ip=ip,
                service="crm",
                resource=("customer", f"cust-{k:05d}"),
            )
            for k in range(70)
        ]
        return [Label("mass_access", user.id)], events

    def privilege_escalation(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """An admin grants a privileged role; or an unprivileged user administers the console."""
        if self.rng.random() < 0.5 and self.privileged:
            user = self.victim(self.privileged, "privilege_escalation")
            target = self.victim(self.unprivileged, "privilege_escalation")
            event = self.event(
                t,
                user,
                "grant",
                ip=self.office_ip(),
                service="admin-console",
                resource=("role", "security-admin"),
                attributes={"role": "security-admin", "target_user": target.id},
            )
        else:
            user = self.victim(self.unprivileged, "privilege_escalation")
            event = self.event(
                t,
                user,
                "admin",
                ip=self.office_ip(),
                service="admin-console",
                resource=("setting", "mfa-policy"),
            )
        return [Label("privilege_escalation", user.id)], [event]

    def dormant_account(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """A service account silent for 120 days logs in from an unknown address."""
        account = f"svc-legacy-{self.rng.getrandbits(32):08x}"
        events = [
            self.event(
                t - timedelta(days=DORMANT_DAYS),
                account,
                "login",
                ip=self.office_ip(),
                actor_type="service",
            ),
            self.event(t, account, "login", ip=self.attacker_ip(), actor_type="service"),
        ]
        return [Label("dormant_account", account)], events

    def terminated_account(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """A user the directory marks terminated logs in and reads."""
        if not self.terminated:
            return self.dormant_account(t)
        user_id = self.rng.choice(self.terminated)
        ip = self.attacker_ip()
        events = [
            self.event(t, user_id, "login", ip=ip),
            self.event(
                t + timedelta(minutes=1),
                user_id,
                "read",
                ip=ip,
                service="crm",
                resource=("customer", "cust-00002"),
            ),
        ]
        return [Label("dormant_account", user_id)], events

    def first_restricted_access(self, t: datetime) -> tuple[list[Label], list[dict[str, Any]]]:
        """A user outside finance reads card data, or one outside IT the backups."""
        if self.rng.random() < 0.5:
            pool = [a for a in self.anytime if a.department != "finance"]
            service, resource = "payments-db", ("table", self.rng.choice(["cards", "transactions"]))
        else:
            pool = [a for a in self.anytime if a.department != "it"]
            service, resource = "object-store", ("bucket", "backups")
        user = self.victim(pool, "first_restricted_access")
        events = [
            self.event(t, user, "read", ip=self.office_ip(), service=service, resource=resource)
        ]
        return [Label("first_restricted_access", user.id)], events


def iter_scenarios(
    seed: int,
    start: datetime,
    *,
    every: timedelta = timedelta(hours=1),
    simulator: Simulator | None = None,
) -> Iterator[Scenario]:
    """Scenarios from ``start`` on, one every ``every``, without end; see :func:`scenarios`."""
    if every <= timedelta(0):
        raise ValueError("scenarios need a positive interval")
    builder = _Builder(seed, simulator or Simulator(seed))
    order = list(KINDS)
    n = 0
    while True:
        if n % len(order) == 0:
            builder.rng.shuffle(order)
        kind = order[n % len(order)]
        # somewhere in the first half of the slot, so a scenario ends before the next
        at = start + every * n + every * (builder.rng.random() / 2)
        labels, events = getattr(builder, kind)(at)
        events.sort(key=lambda e: e["occurred_at"])
        yield Scenario(n, kind, at, tuple(labels), tuple(events))
        n += 1


def scenarios(
    seed: int,
    start: datetime,
    span: timedelta,
    *,
    every: timedelta = timedelta(hours=1),
    simulator: Simulator | None = None,
) -> list[Scenario]:
    """The scenarios beginning in ``[start, start + span)``.

    ``simulator`` gives the population to pick victims from (by default
    ``Simulator(seed)``'s: pass the one generating the traffic if it differs).
    """
    out = []
    for scenario in iter_scenarios(seed, start, every=every, simulator=simulator):
        if scenario.index * every >= span:
            break
        out.append(scenario)
    return out


def inject(
    traffic: Iterable[tuple[float, dict[str, Any]]],
    attacks: Iterable[Scenario],
    *,
    start: datetime,
    speed: float,
) -> Iterator[tuple[float, dict[str, Any], Scenario | None]]:
    """Merge scenario events into ``(wall seconds, event)`` traffic, in virtual time order.

    Yields ``(wall seconds, event, its scenario or None)``; an event from before
    its scenario's ``at`` enters the stream at ``at``.
    """
    pending: list[tuple[float, dict[str, Any], Scenario]] = []
    attack_iter = iter(attacks)
    upcoming = next(attack_iter, None)

    def wall(moment: datetime) -> float:
        return (moment - start).total_seconds() / speed

    for offset_s, event in traffic:
        while upcoming is not None and wall(upcoming.at) <= offset_s:
            pending.extend(
                (wall(max(e["occurred_at"], upcoming.at)), e, upcoming) for e in upcoming.events
            )
            upcoming = next(attack_iter, None)
        if pending:
            pending.sort(key=lambda p: p[0])
            while pending and pending[0][0] <= offset_s:
                yield pending.pop(0)
        yield offset_s, event, None
    pending.sort(key=lambda p: p[0])
    yield from pending


__all__ = ["KINDS", "Label", "Scenario", "inject", "iter_scenarios", "scenarios"]
