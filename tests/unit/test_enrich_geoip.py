"""Geo-IP and ASN enrichment from small .mmdb files built here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.stages.enrich.geoip import GeoIPEnricher, network_type
from tests.factories import make_event
from tests.fixtures.mmdb import asn_record, city_record, write_asn_db, write_city_db

LONDON = city_record(
    "GB", "United Kingdom", "London", lat=51.5142, lon=-0.0931, region="England", continent="EU"
)


def _event(ip: str | None) -> dict[str, Any]:
    return make_event(source={"ip": ip, "port": 1, "user_agent": None})


@pytest.fixture
def databases(tmp_path: Path) -> tuple[Path, Path]:
    city = write_city_db(
        tmp_path / "city.mmdb",
        {
            "81.2.69.0/24": LONDON,
            "67.43.156.0/24": {"registered_country": {"iso_code": "BT", "names": {"en": "Bhutan"}}},
            "2a02:8800::/32": city_record("DE", "Germany"),
            # Looked up only if the enricher forgot to skip private ranges.
            "10.0.0.0/8": city_record("XX", "Nowhere", "Should Not Appear"),
        },
    )
    asn = write_asn_db(
        tmp_path / "asn.mmdb",
        {
            "81.2.69.0/24": asn_record(20712, "Andrews & Arnold Ltd"),
            "10.0.0.0/8": asn_record(64512, "Should Not Appear"),
        },
    )
    return city, asn


def test_public_address_gets_country_city_location_and_as(databases: tuple[Path, Path]) -> None:
    enricher = GeoIPEnricher(*databases, watch=False)
    context = enricher.enrich(_event("81.2.69.160"))
    assert context == {
        "network_type": "public",
        "geo": {
            "country_iso_code": "GB",
            "country_name": "United Kingdom",
            "region_name": "England",
            "city_name": "London",
            "continent_code": "EU",
            "location": {"lat": 51.5142, "lon": -0.0931},
        },
        "as_info": {"number": 20712, "organization": "Andrews & Arnold Ltd"},
    }


def test_country_only_records_and_ipv6(databases: tuple[Path, Path]) -> None:
    enricher = GeoIPEnricher(*databases, watch=False)
    bhutan = enricher.enrich(_event("67.43.156.9"))
    assert bhutan["geo"]["country_iso_code"] == "BT"  # registered_country when no country
    assert bhutan["geo"]["location"] is None
    assert "as_info" not in bhutan
    germany = enricher.enrich(_event("2a02:8800::1"))
    assert germany["geo"]["country_name"] == "Germany"
    assert germany["geo"]["city_name"] is None


def test_public_address_not_in_the_database_is_labelled_only(databases: tuple[Path, Path]) -> None:
    assert GeoIPEnricher(*databases, watch=False).enrich(_event("8.8.8.8")) == {
        "network_type": "public"
    }


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("10.20.4.77", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "link_local"),
        ("fe80::1", "link_local"),
        ("224.0.0.1", "multicast"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.9", "documentation"),
        ("203.0.113.7", "documentation"),
        ("2001:db8::1", "documentation"),
        ("240.0.0.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:10.1.2.3", "private"),
        ("::ffff:81.2.69.160", "public"),
        ("81.2.69.160", "public"),
        ("2a02:8800::1", "public"),
        ("not an ip", None),
    ],
)
def test_network_types(ip: str, kind: str | None) -> None:
    assert network_type(ip) == kind


def test_private_and_reserved_ranges_are_labelled_and_not_looked_up(
    databases: tuple[Path, Path],
) -> None:
    enricher = GeoIPEnricher(*databases, watch=False)
    assert enricher.enrich(_event("10.20.4.77")) == {"network_type": "private"}
    assert enricher.enrich(_event("127.0.0.1")) == {"network_type": "loopback"}
    assert enricher.enrich(_event("203.0.113.7")) == {"network_type": "documentation"}
    assert enricher.enrich(_event(None)) == {}


def test_lookups_are_cached(databases: tuple[Path, Path]) -> None:
    enricher = GeoIPEnricher(*databases, watch=False)
    for _ in range(5):
        enricher.enrich(_event("81.2.69.160"))
    assert enricher._city is not None and enricher._asn is not None
    for snapshot in (enricher._city.current, enricher._asn.current):
        info = snapshot.lookup.cache_info()  # type: ignore[attr-defined]
        assert (info.misses, info.hits) == (1, 4)


def test_only_one_database_configured(databases: tuple[Path, Path]) -> None:
    city, asn = databases
    only_asn = GeoIPEnricher(None, asn, watch=False).enrich(_event("81.2.69.160"))
    assert set(only_asn) == {"network_type", "as_info"}
    only_city = GeoIPEnricher(city, None, watch=False).enrich(_event("81.2.69.160"))
    assert set(only_city) == {"network_type", "geo"}


def test_replaced_database_is_reloaded(databases: tuple[Path, Path], tmp_path: Path) -> None:
    city, asn = databases
    enricher = GeoIPEnricher(city, asn, watch=False)
    assert enricher.enrich(_event("8.8.8.8")) == {"network_type": "public"}
    fresh = write_city_db(tmp_path / "new.mmdb", {"8.8.8.0/24": city_record("US", "United States")})
    fresh.replace(city)  # geoipupdate replaces the file by rename, as here
    assert enricher._city is not None and enricher._city.reload_if_changed()
    assert enricher.enrich(_event("8.8.8.8"))["geo"]["country_iso_code"] == "US"


def test_missing_or_invalid_database_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.mmdb: geo-IP city database not found"):
        GeoIPEnricher(tmp_path / "nope.mmdb", watch=False)
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a database")
    with pytest.raises(ConfigError, match=r"bad\.mmdb: not a MaxMind DB"):
        GeoIPEnricher(None, bad, watch=False)
