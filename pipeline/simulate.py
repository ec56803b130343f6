"""``auditstream simulate``: realistic synthetic access traffic, reproducible from a seed.

Many users in departments, each with a home address and a usual browser;
service accounts calling APIs; resources per service; a success/failure mix
with failure reasons; and a daily rhythm (busy afternoons, quiet nights) on a
virtual clock, so ``--start 2026-01-01 --speed 3600`` plays an hour a second.

Normal traffic stays normal where the detectors would rightly object: users the
identity directory marks terminated or on leave never act; only privileged
users administer the admin console; only the department cleared for them
touches restricted resources; finance, legal and HR keep office hours in their
home region's time zone (the others work at any hour). ``--attacks`` injects
labelled attack scenarios (:mod:`pipeline.scenarios`) into this traffic.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any, Protocol

from pipeline.codec import Encoding
from pipeline.events import parse_time
from pipeline.settings import Settings

DEPARTMENTS = ("engineering", "finance", "sales", "support", "hr", "legal", "it")
SERVICES = {
    "sso": ("application", ["portal", "vpn", "mail", "wiki"]),
    "billing-api": ("invoice", [f"inv-{n:05d}" for n in range(200)]),
    "hr-portal": ("employee_record", [f"emp-{n:04d}" for n in range(300)]),
    "object-store": ("bucket", ["backups", "reports", "ml-data", "public-assets", "logs"]),
    "crm": ("customer", [f"cust-{n:05d}" for n in range(500)]),
    "payments-db": ("table", ["cards", "transactions", "refunds", "merchants"]),
    "admin-console": ("setting", ["mfa-policy", "password-policy", "sso-config", "audit-config"]),
}
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
)
SERVICE_AGENTS = ("python-requests/2.32.3", "Go-http-client/2.0", "aws-sdk-java/2.25.0")
# Public address blocks spread over several regions (documentation ranges are avoided
# so geo-IP enrichment has something to find).
HOME_NETWORKS = ("81.2.69.", "89.160.20.", "216.160.83.", "175.16.199.", "2.125.160.", "67.43.156.")
OFFICE_NETWORK = "10.20."
# UTC offset (hours) of each home network's region, for users who keep office hours
HOME_UTC_OFFSET = {
    "81.2.69.": 0,
    "89.160.20.": 1,
    "216.160.83.": -8,
    "175.16.199.": 8,
    "2.125.160.": 0,
    "67.43.156.": 6,
}
OFFICE_HOURS_DEPARTMENTS = frozenset({"finance", "legal", "hr"})
OFFICE_HOURS = (8, 20)  # local time, first hour and the hour after the last
ADMIN_ACTIONS = frozenset({"admin", "grant", "revoke"})
ADMIN_SERVICE = "admin-console"
# What deploy/enrichment/classification.yaml classes as restricted, and who is cleared for it
RESTRICTED = {
    "payments-db": (frozenset({"cards", "transactions"}), "finance"),
    "object-store": (frozenset({"backups"}), "it"),
}
ACTIONS = (
    ("read", 48),
    ("login", 16),
    ("write", 14),
    ("logout", 8),
    ("delete", 3),
    ("grant", 2),
    ("revoke", 1),
    ("admin", 2),
    ("export", 2),
    ("list", 4),
)
FAILURE_REASONS = {
    "login": ("invalid_password", "unknown_user", "mfa_failed", "account_locked"),
    "default": ("permission_denied", "not_found", "quota_exceeded"),
}


@dataclass(frozen=True)
class Actor:
    id: str
    type: str
    name: str
    tenant: str
    department: str
    home_ip: str
    user_agent: str
    hours: frozenset[int] | None = None  # UTC hours of a user who keeps office hours; None: any


class EventActor(Protocol):
    """Who an access event is about (the simulator's and the search bench's actors)."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def department(self) -> str: ...
    @property
    def user_agent(self) -> str: ...


def access_event(
    rng: random.Random,
    actor: EventActor,
    *,
    occurred_at: datetime,
    action: str,
    service: str,
    resource: tuple[str, str],
    failed: bool,
    ip: str,
) -> dict[str, Any]:
    """One access event of ``actor``; what is left to chance is drawn from ``rng``."""
    resource_type, resource_id = resource
    reasons = FAILURE_REASONS["login" if action == "login" else "default"]
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "schema_version": 1,
        "occurred_at": occurred_at,
        "actor": {"id": actor.id, "type": actor.type, "name": actor.name, "tenant": actor.tenant},
        "action": action,
        "outcome": "failure" if failed else "success",
        "reason": rng.choice(reasons) if failed else None,
        "resource": {"type": resource_type, "id": resource_id, "name": resource_id},
        "source": {"ip": ip, "port": rng.randint(1024, 65535), "user_agent": actor.user_agent},
        "service": {
            "name": service,
            "host": f"{service}-{rng.randint(1, 3)}.prod.internal",
            "environment": "production",
        },
        "session_id": f"s-{rng.getrandbits(48):012x}",
        "request_id": f"r-{rng.getrandbits(64):016x}",
        "auth": {
            "method": "password" if action == "login" else "token",
            "mfa": action == "login" and rng.random() < 0.8,
        },
        "attributes": {"department": actor.department},
    }


@dataclass(frozen=True)
class Roles:
    """What the identity directory says of the simulated users."""

    privileged: frozenset[str] = field(default_factory=frozenset)
    terminated: frozenset[str] = field(default_factory=frozenset)
    on_leave: frozenset[str] = field(default_factory=frozenset)

    @property
    def absent(self) -> frozenset[str]:
        """Users who never act in normal traffic."""
        return self.terminated | self.on_leave


def office_hours(department: str, home_ip: str) -> frozenset[int] | None:
    """The UTC hours a user of ``department`` living at ``home_ip`` works; None: any hour."""
    if department not in OFFICE_HOURS_DEPARTMENTS:
        return None
    offset = HOME_UTC_OFFSET[home_ip[: home_ip.rindex(".") + 1]]
    first, end = OFFICE_HOURS
    return frozenset((h - offset) % 24 for h in range(first, end))


STATUS_EVERY_S = 5.0


def daily_rhythm(moment: datetime) -> float:
    """Relative activity at a time of day: ~0.2 at 03:00, ~1.8 at 14:00, averaging 1."""
    hour = moment.hour + moment.minute / 60
    return 1.0 + 0.8 * math.cos((hour - 14.0) / 24.0 * 2 * math.pi)


class Simulator:
    """Generates events; pure apart from the seeded random generator.

    ``roles`` default to those of the example identity directory
    (:func:`pipeline.stages.enrich.examples.roles`), which the demo enriches with.
    """

    def __init__(
        self,
        seed: int,
        users: int = 500,
        service_accounts: int = 20,
        roles: Roles | None = None,
    ) -> None:
        self._rng = random.Random(seed)
        rng = self._rng
        self.actors: list[Actor] = []
        for n in range(users):
            department = rng.choice(DEPARTMENTS)
            home_ip = rng.choice(HOME_NETWORKS) + str(rng.randint(1, 254))
            self.actors.append(
                Actor(
                    id=f"u{n:05d}",
                    type="user",
                    name=f"user{n:05d}@example.com",
                    tenant="acme" if n % 10 else "globex",
                    department=department,
                    home_ip=home_ip,
                    user_agent=rng.choice(USER_AGENTS),
                    hours=office_hours(department, home_ip),
                )
            )
        for n in range(service_accounts):
            self.actors.append(
                Actor(
                    id=f"svc-{n:03d}",
                    type="service",
                    name=f"svc-{n:03d}",
                    tenant="acme",
                    department="it",
                    home_ip=f"{OFFICE_NETWORK}{rng.randint(0, 9)}.{rng.randint(1, 254)}",
                    user_agent=rng.choice(SERVICE_AGENTS),
                )
            )
        if roles is None:
            from pipeline.stages.enrich.examples import roles as example_roles

            roles = example_roles()
        self.roles = roles
        absent = roles.absent
        # Who acts at each UTC hour: users 3 times as often as service accounts.
        self._cum_weights = [
            list(
                accumulate(
                    1
                    if a.type != "user"
                    else 0
                    if a.id in absent or (a.hours is not None and hour not in a.hours)
                    else 3
                    for a in self.actors
                )
            )
            for hour in range(24)
        ]
        self._actions = [a for a, _ in ACTIONS]
        self._action_weights = [w for _, w in ACTIONS]
        self._services = list(SERVICES)
        self._services_no_admin = [s for s in SERVICES if s != ADMIN_SERVICE]
        self._unrestricted = {
            service: [r for r in SERVICES[service][1] if r not in restricted]
            for service, (restricted, _) in RESTRICTED.items()
        }

    def event(self, occurred_at: datetime) -> dict[str, Any]:
        rng = self._rng
        hour = (occurred_at.astimezone(UTC) if occurred_at.tzinfo else occurred_at).hour
        actor = rng.choices(self.actors, cum_weights=self._cum_weights[hour])[0]
        action = rng.choices(self._actions, weights=self._action_weights)[0]
        admin = (
            actor.type != "user" or action not in ADMIN_ACTIONS or actor.id in self.roles.privileged
        )
        services = self._services if admin else self._services_no_admin
        service = "sso" if action in ("login", "logout") else rng.choice(services)
        resource_type, resource_ids = SERVICES[service]
        cleared = RESTRICTED.get(service)
        if cleared and actor.type == "user" and actor.department != cleared[1]:
            resource_ids = self._unrestricted[service]
        failure_rate = 0.10 if action == "login" else 0.04
        failed = rng.random() < failure_rate
        at_office = rng.random() < 0.6
        ip = (
            f"{OFFICE_NETWORK}{rng.randint(0, 9)}.{rng.randint(1, 254)}"
            if at_office
            else actor.home_ip
        )
        return access_event(
            rng,
            actor,
            occurred_at=occurred_at,
            action=action,
            service=service,
            resource=(resource_type, rng.choice(resource_ids)),
            failed=failed,
            ip=ip,
        )

    def events(
        self, *, count: int | None, rate: float, start: datetime, speed: float
    ) -> Iterator[tuple[float, dict[str, Any]]]:
        """Yield ``(seconds since start on the wall clock, event)`` pairs.

        The virtual clock runs ``speed`` times faster than the wall clock; the
        event rate follows the daily rhythm of the virtual time, averaging ``rate``.
        """
        wall = 0.0
        n = 0
        while count is None or n < count:
            virtual = start + timedelta(seconds=wall * speed)
            yield wall, self.event(virtual)
            n += 1
            wall += self._rng.expovariate(rate * daily_rhythm(virtual))


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "simulate",
        help="send realistic synthetic access events",
        description="Send synthetic access events at a rate, for a count or until stopped.",
    )
    parser.add_argument("--rate", type=float, default=100.0, help="events per second (avg)")
    parser.add_argument("--count", type=int, default=None, help="stop after N events")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--start", default=None, help="virtual clock start, ISO 8601 (default now)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="virtual seconds per wall second (default 1)"
    )
    parser.add_argument("--encoding", choices=[e.value for e in Encoding], default=None)
    parser.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="ignore the wall clock: send as fast as Kafka takes them",
    )
    parser.add_argument(
        "--attacks",
        action="store_true",
        help="inject labelled attack scenarios of every kind (pipeline/scenarios.py)",
    )
    parser.add_argument(
        "--attack-every",
        type=float,
        default=3600.0,
        help="virtual seconds between attacks (default 3600)",
    )
    parser.add_argument(
        "--attacks-after",
        type=float,
        default=14.0,
        help="virtual days of normal traffic before the first attack, for the detectors "
        "to learn habits and places (default 14)",
    )
    parser.add_argument(
        "--labels", default=None, help="write the injected scenarios here, one JSON line each"
    )
    parser.set_defaults(func=run)


def _with_attacks(
    args: argparse.Namespace,
    simulator: Simulator,
    start: datetime,
    traffic: Iterator[tuple[float, dict[str, Any]]],
) -> Iterator[tuple[float, dict[str, Any]]]:
    """``traffic`` with the scenarios merged in; each written to ``--labels`` as it starts."""
    import json

    from pipeline.scenarios import inject, iter_scenarios

    attacks = iter_scenarios(
        args.seed,
        start + timedelta(days=args.attacks_after),
        every=timedelta(seconds=args.attack_every),
        simulator=simulator,
    )
    labels = open(args.labels, "a", encoding="utf-8") if args.labels else None  # noqa: SIM115
    seen = -1
    try:
        for offset_s, event, scenario in inject(traffic, attacks, start=start, speed=args.speed):
            if labels is not None and scenario is not None and scenario.index > seen:
                seen = scenario.index
                line = {
                    "index": scenario.index,
                    "kind": scenario.kind,
                    "at": scenario.at.isoformat(),
                    "labels": [[x.detector, x.entity] for x in scenario.labels],
                    "event_ids": [e["event_id"] for e in scenario.events],
                }
                labels.write(json.dumps(line) + "\n")
                labels.flush()
            yield offset_s, event
    finally:
        if labels is not None:
            labels.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.errors import ConfigError
    from pipeline.producer import AuditProducer

    if args.rate <= 0 or args.speed <= 0:
        raise ConfigError("--rate and --speed must be positive")
    if args.count is not None and args.count < 0:
        raise ConfigError("--count must not be negative")
    if args.attacks and (args.attack_every <= 0 or args.attacks_after < 0):
        raise ConfigError("--attack-every must be positive and --attacks-after not negative")
    start = parse_time(args.start, "--start") if args.start else datetime.now(tz=UTC)
    simulator = Simulator(args.seed)
    encoding = Encoding(args.encoding) if args.encoding else None
    began = time.monotonic()
    sent = 0
    status_at, status_sent = began, 0  # a status line every STATUS_EVERY_S seconds
    with AuditProducer(settings, encoding=encoding) as producer:
        stream = simulator.events(count=args.count, rate=args.rate, start=start, speed=args.speed)
        if args.attacks:
            stream = _with_attacks(args, simulator, start, stream)
        for offset_s, event in stream:
            if not args.as_fast_as_possible:
                delay = began + offset_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.send(event)
            sent += 1
            now = time.monotonic()
            if now - status_at >= STATUS_EVERY_S:
                rate = (sent - status_sent) / (now - status_at)
                print(f"simulate: sent {sent} events, {rate:,.0f}/s", file=sys.stderr, flush=True)
                status_at, status_sent = now, sent
    elapsed = time.monotonic() - began
    print(f"sent {sent} events in {elapsed:.1f} s", file=sys.stderr)
    return 0
