"""Millions of realistic ECS event documents for the search bench, made fast.

The simulator and the worker's stages produce a few thousand events a second,
so 5 million would take most of an hour. This generator draws the same kinds
of access events (:mod:`pipeline.simulate`'s services, actions and failure
reasons), attaches the enrichment context the worker would (a place and
network per address, the directory entry, the parsed user agent through
:class:`~pipeline.stages.enrich.useragent.UserAgentEnricher`, the resource's
label through the shipped classification rules) and turns each into its
document with :func:`pipeline.ecs.to_document`, the sink's own function. The
events template maps strictly (``dynamic: strict``), and :func:`unmapped_fields`
checks a first document against it before anything is loaded, so a field
renamed on one side and not the other stops the bench.

Traffic: a few thousand users with heavy-tailed activity (a few do most of
it) and some busy service accounts; users at the office (private addresses,
no geo) or at home in one of a score of countries, now and then travelling;
about 10 % failures, failed logins partly from addresses abroad; a daily
rhythm and quiet weekends over ``days`` days.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline import ecs
from pipeline.simulate import (
    ACTIONS,
    DEPARTMENTS,
    OFFICE_NETWORK,
    SERVICE_AGENTS,
    SERVICES,
    USER_AGENTS,
    access_event,
    daily_rhythm,
)
from pipeline.sinks.opensearch import events_index

# One place a line: iso|country|continent|city|region|lat|lon|ASN|AS organization|/16 network
HOME_TABLE = """
US|United States|NA|Seattle|Washington|47.61|-122.33|7922|Comcast Cable Communications|73.97.
US|United States|NA|New York|New York|40.71|-74.01|701|Verizon Business|108.41.
GB|United Kingdom|EU|London|England|51.51|-0.09|5607|Sky UK Limited|2.125.
DE|Germany|EU|Berlin|Land Berlin|52.52|13.4|3320|Deutsche Telekom AG|91.64.
FR|France|EU|Paris|Île-de-France|48.86|2.35|3215|Orange S.A.|90.84.
IN|India|AS|Bengaluru|Karnataka|12.97|77.59|24560|Bharti Airtel Ltd.|122.171.
CA|Canada|NA|Toronto|Ontario|43.65|-79.38|812|Rogers Communications|99.228.
NL|Netherlands|EU|Amsterdam|North Holland|52.37|4.9|1136|KPN B.V.|77.161.
ES|Spain|EU|Madrid|Madrid|40.42|-3.7|3352|Telefonica de Espana|83.44.
BR|Brazil|SA|São Paulo|São Paulo|-23.55|-46.63|28573|Claro NXT|177.92.
JP|Japan|AS|Tokyo|Tokyo|35.68|139.69|2516|KDDI Corporation|106.72.
AU|Australia|OC|Sydney|New South Wales|-33.87|151.21|1221|Telstra Limited|101.160.
SG|Singapore|AS|Singapore|Singapore|1.29|103.85|9506|Singtel Fibre|116.86.
IE|Ireland|EU|Dublin|Leinster|53.35|-6.26|5466|Eircom Limited|86.40.
SE|Sweden|EU|Stockholm|Stockholm County|59.33|18.07|3301|Telia Company AB|81.224.
PL|Poland|EU|Warsaw|Mazovia|52.23|21.01|5617|Orange Polska|83.24.
"""
HOME_WEIGHTS = (22, 13, 12, 10, 6, 8, 5, 4, 3, 3, 3, 3, 2, 2, 2, 2)
# Where failed logins from strangers come from (credential stuffing, password spraying).
ABROAD_TABLE = """
RU|Russia|EU|Moscow|Moscow|55.76|37.62|12389|Rostelecom|95.24.
CN|China|AS|Changchun|Jilin Sheng|43.88|125.32|4837|CHINA UNICOM China169 Backbone|175.16.
VN|Vietnam|AS|Hanoi|Hanoi|21.03|105.85|45899|VNPT Corp|113.160.
NG|Nigeria|AF|Lagos|Lagos|6.52|3.38|29465|MTN Nigeria|105.112.
BR|Brazil|SA|Rio de Janeiro|Rio de Janeiro|-22.91|-43.17|7738|V tal|179.218.
IR|Iran|AS|Tehran|Tehran|35.69|51.39|58224|Iran Telecommunication Co|5.160.
UA|Ukraine|EU|Kyiv|Kyiv City|50.45|30.52|15895|Kyivstar|176.36.
US|United States|NA|Ashburn|Virginia|39.04|-77.49|14618|Amazon.com, Inc.|3.80.
"""
OFFICE_SHARE = 0.55  # users' events from the office network (private: no geo)
TRAVEL_SHARE = 0.03  # users' events from a place that is not home
FAILURE_RATE = {"login": 0.18}  # every other action: DEFAULT_FAILURE_RATE
DEFAULT_FAILURE_RATE = 0.08  # with logins ~16 % of actions: ~10 % failures overall
ABROAD_SHARE_OF_FAILED_LOGINS = 0.35
WEEKEND_ACTIVITY = 0.35


@dataclass(frozen=True)
class Place:
    iso: str
    country: str
    continent: str
    city: str
    region: str
    lat: float
    lon: float
    asn: int
    as_org: str
    network: str  # the first two octets and a dot

    def geo(self) -> dict[str, Any]:
        """The enriched record's ``geo`` (GeoContext) for an address here."""
        return {
            "country_iso_code": self.iso,
            "country_name": self.country,
            "region_name": self.region,
            "city_name": self.city,
            "continent_code": self.continent,
            "location": {"lat": self.lat, "lon": self.lon},
        }

    def as_info(self) -> dict[str, Any]:
        return {"number": self.asn, "organization": self.as_org}


def places(table: str) -> tuple[Place, ...]:
    """Places from a ``|``-separated table, one a line."""
    found = []
    for line in table.strip().splitlines():
        iso, country, continent, city, region, lat, lon, asn, org, net = line.split("|")
        found.append(
            Place(iso, country, continent, city, region, float(lat), float(lon), int(asn), org, net)
        )
    return tuple(found)


HOME_PLACES = places(HOME_TABLE)
ABROAD_PLACES = places(ABROAD_TABLE)


@dataclass(frozen=True)
class BenchActor:
    id: str
    type: str  # user | service
    name: str
    tenant: str
    department: str
    home: Place | None  # None: a service account, always on the office network
    home_ip: str
    user_agent: str
    directory: Mapping[str, Any] | None
    partition: int


def hour_counts(total: int, start: datetime, hours: int) -> list[int]:
    """``total`` split over ``hours`` hours from ``start`` by the daily rhythm, quieter weekends.

    Largest remainders: the counts sum to ``total`` exactly.
    """
    if hours <= 0:
        raise ValueError("hours must be positive")
    weights = []
    for h in range(hours):
        moment = start + timedelta(hours=h)
        weights.append(daily_rhythm(moment) * (WEEKEND_ACTIVITY if moment.weekday() >= 5 else 1.0))
    scale = total / sum(weights)
    raw = [w * scale for w in weights]
    counts = [int(r) for r in raw]
    by_fraction = sorted(range(hours), key=lambda h: raw[h] - counts[h], reverse=True)
    for h in by_fraction[: total - sum(counts)]:
        counts[h] += 1
    return counts


def text_fields(properties: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every ``text`` field of a mapping (multi-fields such as ``user.name.text`` included)."""
    found: list[str] = []
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            found.extend(text_fields(spec["properties"], path + "."))
            continue
        if spec.get("type") == "text":
            found.append(path)
        found.extend(
            f"{path}.{sub}" for sub, s in spec.get("fields", {}).items() if s.get("type") == "text"
        )
    return found


def unmapped_fields(
    doc: Mapping[str, Any], properties: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Paths of ``doc`` that a strict mapping with ``properties`` would refuse."""
    refused: list[str] = []
    for key, value in doc.items():
        path = f"{prefix}{key}"
        spec = properties.get(key)
        if spec is None:
            refused.append(path)
        elif "properties" in spec:
            if isinstance(value, Mapping):
                refused.extend(unmapped_fields(value, spec["properties"], path + "."))
            else:
                refused.append(path)
        elif isinstance(value, Mapping) and spec.get("type") not in ("object", "geo_point"):
            refused.append(path)
    return refused


class Generator:
    """Reproducible documents from a seed; :meth:`documents` yields them in time order."""

    def __init__(
        self,
        seed: int,
        *,
        users: int = 3000,
        service_accounts: int = 50,
        partitions: int = 12,
        topic: str = "access-events",
    ) -> None:
        from pipeline.schemas import ACCESS_EVENT, default_store
        from pipeline.stages.enrich.classify import load_rules
        from pipeline.stages.enrich.examples import FIRST, LAST, TITLES, rules_file
        from pipeline.stages.enrich.useragent import UserAgentEnricher

        self._rng = random.Random(seed)
        rng = self._rng
        self.actors: list[BenchActor] = []
        heads: dict[str, str] = {}
        for n in range(users):
            department = rng.choice(DEPARTMENTS)
            home = rng.choices(HOME_PLACES, weights=HOME_WEIGHTS)[0]
            actor_id = f"u{n:05d}"
            head = heads.setdefault(department, actor_id)
            first, last = FIRST[n % len(FIRST)], LAST[(n // len(FIRST)) % len(LAST)]
            initial = chr(ord("A") + (n // (len(FIRST) * len(LAST))) % 26)
            directory = {
                "display_name": f"{first} {initial}. {last}",
                "email": f"user{n:05d}@example.com",
                "department": department,
                "title": rng.choice(TITLES[department]),
                "manager": None if head == actor_id else head,
                "privileged": department == "it" and rng.random() < 0.3,
                "employment_status": "active",
            }
            self.actors.append(
                self._actor(actor_id, "user", directory, home, rng.choice(USER_AGENTS), partitions)
            )
        for n in range(service_accounts):
            self.actors.append(
                self._actor(
                    f"svc-{n:03d}", "service", None, None, rng.choice(SERVICE_AGENTS), partitions
                )
            )
        # heavy-tailed activity: a few users do much, most do little; services are busy
        weights = [rng.lognormvariate(0, 1.0) if a.type == "user" else 8.0 for a in self.actors]
        self._cum_actors = _cumulative(weights)
        self._actions = [a for a, _ in ACTIONS]
        self._cum_actions = _cumulative([w for _, w in ACTIONS])
        self._services = [s for s in SERVICES if s != "admin-console"]
        parse = UserAgentEnricher().parse
        self._agents = {ua: dict(parse(ua)["user_agent"]) for ua in (*USER_AGENTS, *SERVICE_AGENTS)}
        rules = load_rules(rules_file())
        self._labels = {
            (service, rid): dict(rules.classify(service, rtype, rid)["classification"])
            for service, (rtype, ids) in SERVICES.items()
            for rid in ids
        }
        self._geo = {p: (p.geo(), p.as_info()) for p in (*HOME_PLACES, *ABROAD_PLACES)}
        self._offsets = [0] * partitions
        self._topic = topic
        self._writer = default_store().latest(ACCESS_EVENT).label

    @staticmethod
    def _actor(
        actor_id: str,
        kind: str,
        directory: dict[str, Any] | None,
        home: Place | None,
        agent: str,
        partitions: int,
    ) -> BenchActor:
        rng_ip = random.Random(actor_id)
        home_ip = f"{home.network}{rng_ip.randint(0, 255)}.{rng_ip.randint(1, 254)}" if home else ""
        return BenchActor(
            id=actor_id,
            type=kind,
            name=directory["email"] if directory else actor_id,
            tenant="acme",
            department=directory["department"] if directory else "it",
            home=home,
            home_ip=home_ip,
            user_agent=agent,
            directory=directory,
            partition=zlib.crc32(actor_id.encode()) % partitions,
        )

    def documents(
        self, total: int, start: datetime, hours: int, prefix: str
    ) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """``(index, _id, document)`` for ``total`` events over ``hours`` hours from ``start``."""
        for h, count in enumerate(hour_counts(total, start, hours)):
            hour = start + timedelta(hours=h)
            index = events_index(prefix, hour)
            for _ in range(count):
                doc = self.document(hour + timedelta(seconds=self._rng.random() * 3600))
                yield index, doc["event"]["id"], doc

    def document(self, occurred: datetime) -> dict[str, Any]:
        """One event's ECS document, as the sink would write it."""
        enriched = self.enriched(occurred)
        doc = ecs.to_document(enriched)
        ingested = enriched["received_at"] + timedelta(milliseconds=200 + self._rng.random() * 800)
        doc["event"]["ingested"] = ecs.iso(ingested)
        return doc

    def enriched(self, occurred: datetime) -> dict[str, Any]:
        """A decoded EnrichedEvent (v2) as the worker would emit it."""
        rng = self._rng
        actor = rng.choices(self.actors, cum_weights=self._cum_actors)[0]
        action = rng.choices(self._actions, cum_weights=self._cum_actions)[0]
        service = "sso" if action in ("login", "logout") else rng.choice(self._services)
        resource_type, resource_ids = SERVICES[service]
        resource_id = rng.choice(resource_ids)
        failed = rng.random() < FAILURE_RATE.get(action, DEFAULT_FAILURE_RATE)
        place: Place | None = None
        if actor.home is None:
            ip = f"{OFFICE_NETWORK}{rng.randint(0, 9)}.{rng.randint(1, 254)}"
        elif failed and action == "login" and rng.random() < ABROAD_SHARE_OF_FAILED_LOGINS:
            place = rng.choice(ABROAD_PLACES)
            ip = f"{place.network}{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        else:
            draw = rng.random()
            if draw < OFFICE_SHARE:
                ip = f"{OFFICE_NETWORK}{rng.randint(0, 9)}.{rng.randint(1, 254)}"
            elif draw < OFFICE_SHARE + TRAVEL_SHARE:
                place = rng.choice(HOME_PLACES)
                ip = f"{place.network}{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            else:
                place, ip = actor.home, actor.home_ip
        geo, as_info = self._geo[place] if place else (None, None)
        offset = self._offsets[actor.partition]
        self._offsets[actor.partition] = offset + 1
        event = access_event(
            rng,
            actor,
            occurred_at=occurred,
            action=action,
            service=service,
            resource=(resource_type, resource_id),
            failed=failed,
            ip=ip,
        )
        return {
            "event": event,
            "content_hash": f"{rng.getrandbits(256):064x}",
            "received_at": occurred + timedelta(milliseconds=20 + rng.random() * 500),
            "source_topic": self._topic,
            "source_partition": actor.partition,
            "source_offset": offset,
            "encoding": "single_object",
            "writer_schema": self._writer,
            "enrichment_errors": [],
            "network_type": "public" if place else "private",
            "geo": geo,
            "as_info": as_info,
            "directory": actor.directory,
            "user_agent": self._agents[actor.user_agent],
            "classification": self._labels[(service, resource_id)],
        }


def _cumulative(weights: list[float]) -> list[float]:
    total = 0.0
    out = []
    for w in weights:
        total += w
        out.append(total)
    return out


def day_indices(prefix: str, start: datetime, end: datetime) -> list[str]:
    """The daily index names ``[start, end)`` spans."""
    names: list[str] = []
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        names.append(events_index(prefix, day))
        day += timedelta(days=1)
    return names
