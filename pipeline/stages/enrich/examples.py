"""Example enrichment sources that match ``auditstream simulate``, written on demand.

``write_examples(out)`` writes into ``out``:

- ``directory.json``: an identity directory export for the simulator's users
  u00000…u00499, with each user's department as the simulator draws it for
  seed 1, a manager, a title, a privileged flag, and a few terminated and
  on-leave users; ``directory.sample.csv``: the first users in the CSV format;
- ``demo-city.mmdb`` and ``demo-asn.mmdb``: tiny MaxMind-format databases for
  the simulator's public "home" networks (needs the ``dev`` extra's
  mmdb-writer). Demo data modelled on MaxMind's own test databases, not real
  geo-IP data: point ``AUDITSTREAM_ENRICH__GEOIP_CITY_PATH``/``…_ASN_PATH`` at
  GeoLite2 or DB-IP files in production;
- ``classification.yaml``: a copy of the hand-written rules in
  ``deploy/enrichment``.

They are generated rather than kept in the repository, so the demo and the
tests always match the simulator.
"""

from __future__ import annotations

import csv
import functools
import json
import random
import shutil
from pathlib import Path
from typing import Any

from pipeline.settings import EnrichSettings
from pipeline.simulate import DEPARTMENTS, Roles, Simulator

FIRST = (
    "Ada",
    "Alan",
    "Grace",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Tim",
    "Margaret",
    "Dennis",
    "Shafi",
    "Leslie",
    "Sophie",
    "John",
    "Hedy",
    "Niklaus",
    "Lynn",
    "Guido",
)
LAST = (
    "Lovelace",
    "Turing",
    "Hopper",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Berners-Lee",
    "Hamilton",
    "Ritchie",
    "Goldwasser",
    "Lamport",
    "Wilson",
    "McCarthy",
    "Lamarr",
    "Wirth",
    "Conway",
    "van Rossum",
)
TITLES = {
    "engineering": ("Software Engineer", "Senior Software Engineer", "Staff Engineer"),
    "finance": ("Accountant", "Financial Analyst", "Controller"),
    "sales": ("Account Executive", "Sales Engineer", "Account Manager"),
    "support": ("Support Engineer", "Support Specialist", "Support Lead"),
    "hr": ("HR Generalist", "Recruiter", "HR Business Partner"),
    "legal": ("Counsel", "Paralegal", "Compliance Officer"),
    "it": ("Systems Administrator", "Security Engineer", "IT Support Technician"),
}
HEAD_TITLES = {d: f"Head of {d.upper() if d in ('hr', 'it') else d.title()}" for d in DEPARTMENTS}


def directory(seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(f"directory-{seed}")
    users = [a for a in Simulator(seed, roles=Roles()).actors if a.type == "user"]
    heads: dict[str, str] = {}
    for actor in users:
        heads.setdefault(actor.department, actor.id)
    rows = []
    for actor in users:
        n = int(actor.id[1:])
        head = heads[actor.department] == actor.id
        status = rng.choices(("active", "terminated", "on_leave"), weights=(96, 2, 2))[0]
        rows.append(
            {
                "id": actor.id,
                "display_name": f"{FIRST[n % len(FIRST)]} {LAST[(n // len(FIRST)) % len(LAST)]}",
                "email": actor.name,
                "department": actor.department,
                "title": HEAD_TITLES[actor.department]
                if head
                else rng.choice(TITLES[actor.department]),
                "manager": None if head else heads[actor.department],
                "privileged": head or (actor.department == "it" and rng.random() < 0.5),
                "employment_status": "active" if head else status,
            }
        )
    return rows


@functools.cache
def roles(seed: int = 1) -> Roles:
    """Who :func:`directory` marks privileged, terminated and on leave."""
    rows = directory(seed)
    return Roles(
        privileged=frozenset(r["id"] for r in rows if r["privileged"]),
        terminated=frozenset(r["id"] for r in rows if r["employment_status"] == "terminated"),
        on_leave=frozenset(r["id"] for r in rows if r["employment_status"] == "on_leave"),
    )


# network → (city record, (ASN, organization)); places as in MaxMind's test databases
DEMO_NETWORKS: dict[str, tuple[dict[str, Any], tuple[int, str]]] = {
    "81.2.69.0/24": (
        {
            "iso": "GB",
            "country": "United Kingdom",
            "city": "London",
            "region": "England",
            "continent": "EU",
            "lat": 51.5142,
            "lon": -0.0931,
        },
        (20712, "Andrews & Arnold Ltd"),
    ),
    "89.160.20.0/24": (
        {
            "iso": "SE",
            "country": "Sweden",
            "city": "Linköping",
            "region": "Östergötland County",
            "continent": "EU",
            "lat": 58.4167,
            "lon": 15.6167,
        },
        (29518, "Bredband2 AB"),
    ),
    "216.160.83.0/24": (
        {
            "iso": "US",
            "country": "United States",
            "city": "Milton",
            "region": "Washington",
            "continent": "NA",
            "lat": 47.2513,
            "lon": -122.3149,
        },
        (209, "CenturyLink Communications, LLC"),
    ),
    "175.16.199.0/24": (
        {
            "iso": "CN",
            "country": "China",
            "city": "Changchun",
            "region": "Jilin Sheng",
            "continent": "AS",
            "lat": 43.88,
            "lon": 125.3228,
        },
        (4837, "CHINA UNICOM China169 Backbone"),
    ),
    "2.125.160.0/24": (
        {
            "iso": "GB",
            "country": "United Kingdom",
            "city": "Boxford",
            "region": "England",
            "continent": "EU",
            "lat": 51.75,
            "lon": -1.25,
        },
        (5607, "Sky UK Limited"),
    ),
    "67.43.156.0/24": (
        {
            "iso": "BT",
            "country": "Bhutan",
            "city": None,
            "region": None,
            "continent": "AS",
            "lat": 27.5,
            "lon": 90.5,
        },
        (35908, "Demo Bhutan Telecom"),
    ),
}


def write_demo_geoip(out: Path) -> None:
    try:
        from mmdb_writer import MmdbU32, MMDBWriter
        from netaddr import IPSet
    except ImportError:
        raise ImportError(
            "writing the demo geo-IP files needs mmdb-writer: pip install -e '.[dev]'"
        ) from None

    city = MMDBWriter(6, "GeoLite2-City", ["en"], "auditstream demo city data", True)
    asn = MMDBWriter(6, "GeoLite2-ASN", ["en"], "auditstream demo ASN data", True)
    for network, (place, (number, organization)) in DEMO_NETWORKS.items():
        record: dict[str, Any] = {
            "continent": {"code": place["continent"], "names": {"en": place["continent"]}},
            "country": {"iso_code": place["iso"], "names": {"en": place["country"]}},
            "location": {"latitude": place["lat"], "longitude": place["lon"]},
        }
        if place["city"]:
            record["city"] = {"names": {"en": place["city"]}}
        if place["region"]:
            record["subdivisions"] = [{"names": {"en": place["region"]}}]
        city.insert_network(IPSet([network]), record)
        asn.insert_network(
            IPSet([network]),
            {
                "autonomous_system_number": MmdbU32(number),
                "autonomous_system_organization": organization,
            },
        )
    city.to_db_file(str(out / "demo-city.mmdb"))
    asn.to_db_file(str(out / "demo-asn.mmdb"))


def rules_file() -> Path:
    """``deploy/enrichment/classification.yaml`` in a checkout, or the packaged copy."""
    here = Path(__file__).resolve().parents[2]
    for candidate in (here.parent / "deploy" / "enrichment", here / "_enrichment"):
        if (candidate / "classification.yaml").is_file():
            return candidate / "classification.yaml"
    raise FileNotFoundError(f"no deploy/enrichment/classification.yaml near {here}")


def write_examples(out: Path) -> EnrichSettings:
    """Write every example source into ``out``; settings with every enricher on them."""
    out.mkdir(parents=True, exist_ok=True)
    rows = directory()
    lines = ",\n".join(json.dumps(row, ensure_ascii=False) for row in rows)
    (out / "directory.json").write_text('{"users": [\n' + lines + "\n]}\n")
    with (out / "directory.sample.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows[:20]:
            writer.writerow(
                {
                    k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v)
                    for k, v in row.items()
                }
            )
    write_demo_geoip(out)
    shutil.copyfile(rules_file(), out / "classification.yaml")
    return EnrichSettings(
        geoip_city_path=out / "demo-city.mmdb",
        geoip_asn_path=out / "demo-asn.mmdb",
        directory_path=out / "directory.json",
        classification_path=out / "classification.yaml",
    )
