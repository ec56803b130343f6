"""Geo-IP and ASN: where ``source.ip`` is and who announces it, from MaxMind-format files.

Reads GeoLite2-City or GeoLite2-Country (or DB-IP's compatible city/country
files) for the place, and GeoLite2-ASN (or DB-IP ASN) for the autonomous
system. Addresses that are not public (private, shared, loopback, link-local,
multicast, documentation, reserved, unspecified) are labelled in
``network_type`` and never looked up. Databases are memory-mapped and reloaded
off the event loop when ``geoipupdate`` replaces them; lookups are cached.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings import EnrichSettings
from pipeline.stages.enrich.base import NOTHING, Context, Enricher, WatchedFile, field, log

NETWORK_TYPES = (
    "public",
    "private",
    "shared",
    "loopback",
    "link_local",
    "multicast",
    "documentation",
    "reserved",
    "unspecified",
)
_DOCUMENTATION = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20")
)
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598


@lru_cache(maxsize=65_536)
def network_type(ip: str) -> str | None:
    """Which of :data:`NETWORK_TYPES` ``ip`` belongs to; None if it is not an address."""
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link_local"
    if addr.is_multicast:
        return "multicast"
    if any(addr.version == n.version and addr in n for n in _DOCUMENTATION):
        return "documentation"
    if any(addr.version == n.version and addr in n for n in _PRIVATE):
        return "private"
    if addr.version == 4 and addr in _SHARED:
        return "shared"
    return "public" if addr.is_global else "reserved"


def _english(node: Any) -> str | None:
    names = node.get("names") if isinstance(node, Mapping) else None
    name = names.get("en") if isinstance(names, Mapping) else None
    return name if isinstance(name, str) else None


def geo_from_record(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """A GeoContext from a GeoIP2/GeoLite2/DB-IP city or country record."""
    country = record.get("country") or record.get("registered_country") or {}
    subdivisions = record.get("subdivisions") or [{}]
    location = record.get("location") or {}
    lat, lon = location.get("latitude"), location.get("longitude")
    geo = {
        "country_iso_code": country.get("iso_code"),
        "country_name": _english(country),
        "region_name": _english(subdivisions[0]),
        "city_name": _english(record.get("city")),
        "continent_code": (record.get("continent") or {}).get("code"),
        "location": (
            {"lat": float(lat), "lon": float(lon)}
            if isinstance(lat, int | float) and isinstance(lon, int | float)
            else None
        ),
    }
    return geo if any(v is not None for v in geo.values()) else None


def as_from_record(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """An AsContext from a GeoLite2-ASN or DB-IP ASN record."""
    number = record.get("autonomous_system_number")
    organization = record.get("autonomous_system_organization")
    if number is None and organization is None:
        return None
    return {
        "number": int(number) if isinstance(number, int) else None,
        "organization": organization if isinstance(organization, str) else None,
    }


def _lookup(
    reader: Any, convert: Callable[[Mapping[str, Any]], dict[str, Any] | None], ip: str
) -> dict[str, Any] | None:
    record = reader.get(ip)
    return convert(record) if isinstance(record, Mapping) else None


class _Database:
    """One opened ``.mmdb`` file with its own lookup cache (a snapshot: never changes)."""

    def __init__(
        self,
        path: Path,
        convert: Callable[[Mapping[str, Any]], dict[str, Any] | None],
        cache_size: int,
        expect: str,
    ) -> None:
        import maxminddb

        try:
            self.reader = maxminddb.open_database(str(path))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot open: {exc.strerror or exc}") from None
        except (RuntimeError, ValueError):  # maxminddb.InvalidDatabaseError is a RuntimeError
            raise ConfigError(f"{path}: not a MaxMind DB (.mmdb) file") from None
        kind = str(self.reader.metadata().database_type)
        if expect.lower() not in kind.lower():
            log.warning("%s is a %r database; expected a %s database", path, kind, expect)
        self.lookup: Callable[[str], dict[str, Any] | None] = lru_cache(maxsize=cache_size)(
            partial(_lookup, self.reader, convert)
        )


class GeoIPEnricher(Enricher):
    """``network_type``, ``geo`` and ``as_info`` for ``source.ip``."""

    name = "geoip"
    fields = ("network_type", "geo", "as_info")

    def __init__(
        self,
        city_path: Path | None = None,
        asn_path: Path | None = None,
        *,
        cache_size: int = 10_000,
        reload_interval_s: float = 5.0,
        watch: bool = True,
    ) -> None:
        self._city = (
            WatchedFile(
                city_path,
                lambda p: _Database(p, geo_from_record, cache_size, "City"),
                interval_s=reload_interval_s,
                what="geo-IP city database",
                watch=watch,
            )
            if city_path
            else None
        )
        self._asn = (
            WatchedFile(
                asn_path,
                lambda p: _Database(p, as_from_record, cache_size, "ASN"),
                interval_s=reload_interval_s,
                what="geo-IP ASN database",
                watch=watch,
            )
            if asn_path
            else None
        )

    @classmethod
    def from_settings(cls, settings: EnrichSettings) -> GeoIPEnricher | None:
        if settings.geoip_city_path is None and settings.geoip_asn_path is None:
            return None
        return cls(
            settings.geoip_city_path,
            settings.geoip_asn_path,
            cache_size=settings.cache_size,
            reload_interval_s=settings.reload_interval_s,
        )

    def enrich(self, event: Mapping[str, Any]) -> Context:
        ip = field(event, "source", "ip")
        if not ip:
            return NOTHING
        kind = network_type(ip)
        if kind is None:
            return NOTHING
        if kind != "public":
            return {"network_type": kind}
        context: dict[str, Any] = {"network_type": kind}
        if self._city is not None and (geo := self._city.current.lookup(ip)) is not None:
            context["geo"] = geo
        if self._asn is not None and (as_info := self._asn.current.lookup(ip)) is not None:
            context["as_info"] = as_info
        return context

    def close(self) -> None:
        for watched in (self._city, self._asn):
            if watched is not None:
                watched.close()
