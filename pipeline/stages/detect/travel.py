"""Detectors 4-5, on where a user comes from: impossible travel, a new country or ASN.

Both use only public source addresses with a geo-IP answer: a private,
shared or unknown address says nothing about where the user is, so it is
never a baseline and never compared.

- **Impossible travel** (``impossible_travel``): two successful logins whose
  distance over the time between them implies more than ``max_speed_kmh``;
  pairs closer than ``min_distance_km`` are ignored (geo-IP is coarse). Each
  login is compared with its neighbours in event time, so a late login is
  judged where it belongs. Keeps the last ``max_tracked`` geolocated logins.
- **New country or ASN** (``new_country_or_asn``): a successful event from a
  country or an autonomous system the user was not seen in during the last
  ``lookback_days``; silent until the user's history spans ``learn_days``, and
  when the user has no place at all in the lookback (back from a long absence).
  Keeps, per country and per ASN, when it was last seen (at most
  ``max_tracked`` of each, the least recent forgotten first).
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.stages.detect.alerts import AlertState
from pipeline.stages.detect.base import US, Detector, EnrichedEventView, Match, insert, span, when
from pipeline.stages.detect.rules import AlertRules, ImpossibleTravelRule, NewLocationRule

EARTH_RADIUS_KM = 6371.0088
DAY_US = 86_400 * US

# (occurred_us, lat, lon, country, ip, event_id), in time order
Login = tuple[int, float, float, str, str, str]


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


class ImpossibleTravel(Detector[list[Login]]):
    name = "impossible_travel"
    title_text = "Impossible travel"

    def __init__(self, rule: ImpossibleTravelRule, alerts: AlertRules, lateness_s: float = 3600.0):
        super().__init__(rule, alerts, lateness_s)
        self.max_speed = rule.max_speed_kmh
        self.min_distance = rule.min_distance_km
        self.cap = rule.max_tracked

    def relevant(self, event: EnrichedEventView) -> bool:
        return (
            event.successful_login
            and event.public
            and event.lat is not None
            and event.lon is not None
        )

    def new_data(self) -> list[Login]:
        return []

    def dump_data(self, data: list[Login]) -> Any:
        return data

    def load_data(self, raw: Any) -> list[Login]:
        return [(int(t), float(a), float(o), str(c), str(i), str(k)) for t, a, o, c, i, k in raw]

    def update(self, data: list[Login], event: EnrichedEventView) -> Match | None:
        assert event.lat is not None and event.lon is not None
        login: Login = (
            event.occurred_us,
            event.lat,
            event.lon,
            event.country or "",
            event.source_ip or "",
            event.event_id,
        )
        index = insert(data, login)
        pairs = []
        if index > 0:
            pairs.append((data[index - 1], login))
        if index + 1 < len(data):
            pairs.append((login, data[index + 1]))
        match = None
        for before, after in pairs:
            match = self._judge(before, after, event)
            if match is not None:
                break
        if len(data) > self.cap:
            del data[: len(data) - self.cap]
        return match

    def _judge(self, before: Login, after: Login, event: EnrichedEventView) -> Match | None:
        km = distance_km(before[1], before[2], after[1], after[2])
        if km < self.min_distance:
            return None
        hours = (after[0] - before[0]) / (3600 * US)
        speed = km / hours if hours > 0 else math.inf
        if speed <= self.max_speed:
            return None
        return Match(
            at_us=event.occurred_us,
            first_us=before[0],
            last_us=after[0],
            event_ids=[before[5], after[5]],
            count=2,
            facts={
                "from_ip": before[4],
                "from_country": before[3],
                "to_ip": after[4],
                "to_country": after[3],
                "distance_km": f"{km:.0f}",
                "speed_kmh": "inf" if math.isinf(speed) else f"{speed:.0f}",
            },
            actor=event.actor_id,
            source_ip=event.source_ip,
        )

    def summary(self, alert: AlertState, entity: str) -> str:
        f = alert.facts
        return (
            f"User {entity} logged in from {f.get('from_ip')} ({f.get('from_country') or '?'}) "
            f"and from {f.get('to_ip')} ({f.get('to_country') or '?'}), "
            f"{f.get('distance_km')} km apart, within {span(alert.first_us, alert.last_us)} "
            f"(between {when(alert.first_us)} and {when(alert.last_us)}): about "
            f"{f.get('speed_kmh')} km/h, faster than any traveller. One of the two logins is "
            "probably someone else using the account, or a proxy or VPN; ask the user."
        )


class NewLocation:
    """What :class:`NewCountryOrAsn` keeps: first sighting and last-seen per place."""

    __slots__ = ("asns", "countries", "first_us")

    def __init__(self, first_us: int, countries: dict[str, int], asns: dict[str, int]) -> None:
        self.first_us = first_us
        self.countries = countries
        self.asns = asns


class NewCountryOrAsn(Detector[NewLocation]):
    name = "new_country_or_asn"
    title_text = "Access from a new country or network"

    def __init__(self, rule: NewLocationRule, alerts: AlertRules, lateness_s: float = 3600.0):
        super().__init__(rule, alerts, lateness_s)
        self.lookback_us = int(rule.lookback_days * DAY_US)
        self.learn_us = int(rule.learn_days * DAY_US)
        self.cap = rule.max_tracked
        self.window_s = int(rule.lookback_days * 86_400)
        self.days = int(rule.lookback_days)

    def relevant(self, event: EnrichedEventView) -> bool:
        return event.actor_type == "user"

    def new_data(self) -> NewLocation:
        return NewLocation(0, {}, {})

    def dump_data(self, data: NewLocation) -> Any:
        return [data.first_us, data.countries, data.asns]

    def load_data(self, raw: Any) -> NewLocation:
        return NewLocation(int(raw[0]), dict(raw[1]), dict(raw[2]))

    def update(self, data: NewLocation, event: EnrichedEventView) -> Match | None:
        t = event.occurred_us
        if not data.first_us or t < data.first_us:
            data.first_us = t
        if event.outcome != "success" or not event.public:
            return None
        # Silent while learning, and when the user has no recent place to compare with
        # (back after weeks away: every place would look new).
        horizon = t - self.lookback_us
        learned = t - data.first_us >= self.learn_us and any(
            horizon <= last for last in (*data.countries.values(), *data.asns.values())
        )
        facts: dict[str, str] = {}
        if event.country:
            if self._new(data.countries, event.country, t):
                facts["new_country"] = event.country
            self._seen(data.countries, event.country, t)
        if event.asn is not None:
            asn = str(event.asn)
            if self._new(data.asns, asn, t):
                facts["new_asn"] = asn
                facts["as_org"] = event.as_org or ""
            self._seen(data.asns, asn, t)
        if not learned or not facts:
            return None
        facts["known_countries"] = ",".join(sorted(data.countries))
        return Match(
            at_us=t,
            first_us=t,
            last_us=t,
            event_ids=[event.event_id],
            count=1,
            facts=facts,
            actor=event.actor_id,
            source_ip=event.source_ip,
        )

    def _new(self, seen: dict[str, int], key: str, t: int) -> bool:
        last = seen.get(key)
        return last is None or last < t - self.lookback_us

    def _seen(self, seen: dict[str, int], key: str, t: int) -> None:
        seen[key] = max(seen.get(key, 0), t)
        if len(seen) > self.cap:
            del seen[min(seen, key=seen.__getitem__)]

    def summary(self, alert: AlertState, entity: str) -> str:
        f = alert.facts
        what = []
        if "new_country" in f:
            what.append(f"from the country {f['new_country']}")
        if "new_asn" in f:
            what.append(f"through the network AS{f['new_asn']} ({f.get('as_org') or 'unknown'})")
        return (
            f"User {entity} was active at {when(alert.first_us)} from "
            f"{alert.source_ip or 'an unknown address'}, {' and '.join(what) or 'from a new place'}"
            f", which this user had not used in the last {self.days} days "
            f"(recently seen countries: {f.get('known_countries') or 'none'}). A new place is "
            "often travel or a new provider, but can be a stolen session or password."
        )
