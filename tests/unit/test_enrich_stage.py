"""The enrichment stage: enrichers from settings, context for EnrichedEvent v2, failures flow."""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_reader
from prometheus_client import REGISTRY

from pipeline import ecs
from pipeline.codec import Encoding, encode
from pipeline.errors import ConfigError
from pipeline.schemas import ENRICHED_EVENT, default_store
from pipeline.settings import EnrichSettings, Settings, load_settings
from pipeline.simulate import Simulator
from pipeline.stages.enrich import Enricher, EnrichmentError, EnrichStage, bench_enrich
from pipeline.stages.enrich.examples import write_examples
from tests.factories import make_event


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """The example sources, written for this test (reload threads watch only them)."""
    write_examples(tmp_path / "enrichment")
    return tmp_path / "enrichment"


def _settings(examples: Path) -> EnrichSettings:
    return EnrichSettings(
        geoip_city_path=examples / "demo-city.mmdb",
        geoip_asn_path=examples / "demo-asn.mmdb",
        directory_path=examples / "directory.json",
        classification_path=examples / "classification.yaml",
    )


@pytest.fixture
def stage(examples: Path) -> Any:
    with EnrichStage.from_settings(_settings(examples)) as built:
        yield built


class Broken(Enricher):
    name = "broken"
    fields = ()

    def enrich(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        raise EnrichmentError("lookup service on fire")


class Buggy(Enricher):
    name = "buggy"
    fields = ()

    def enrich(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"x": event["no such field"]}


class Fixed(Enricher):
    name = "fixed"
    fields = ("network_type",)

    def enrich(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"network_type": "public"}


def _errors_counted(enricher: str) -> float:
    value = REGISTRY.get_sample_value("auditstream_enrichment_errors_total", {"enricher": enricher})
    return value or 0.0


def test_nothing_configured_means_only_the_user_agent_parser() -> None:
    assert EnrichStage.from_settings(Settings()).names == ["user_agent"]
    bare = EnrichStage.from_settings(EnrichSettings(user_agent=False))
    assert bare.names == []
    assert bare.enrich(make_event()) == ({}, [])


def test_settings_come_from_the_environment(
    examples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDITSTREAM_ENRICH__DIRECTORY_PATH", str(examples / "directory.json"))
    monkeypatch.setenv("AUDITSTREAM_ENRICH__USER_AGENT", "false")
    settings = load_settings()
    assert settings.enrich.directory_path == examples / "directory.json"
    with EnrichStage.from_settings(settings) as stage:
        assert stage.names == ["directory"]


def test_all_enrichers_give_the_v2_context(stage: EnrichStage) -> None:
    assert stage.names == ["geoip", "directory", "user_agent", "classification"]
    event = make_event(
        actor={"id": "u00042", "type": "user", "name": None, "tenant": "acme"},
        source={"ip": "81.2.69.160", "port": 1, "user_agent": "curl/8.5.0"},
        service={"name": "payments-db", "host": None, "environment": None},
        resource={"type": "table", "id": "cards", "name": None},
    )
    context, errors = stage.enrich(event)
    assert errors == []
    assert set(context) == {
        "network_type",
        "geo",
        "as_info",
        "directory",
        "user_agent",
        "classification",
    }
    assert context["geo"]["city_name"] == "London"
    assert context["as_info"]["number"] == 20712
    assert context["directory"]["email"] == "user00042@example.com"
    assert context["user_agent"]["name"] == "curl"
    assert context["classification"]["sensitivity"] == "restricted"


def test_shipped_directory_agrees_with_the_simulator(stage: EnrichStage) -> None:
    simulator = Simulator(1)
    for _ in range(200):
        event = simulator.event(datetime(2026, 1, 1, tzinfo=UTC))
        context, errors = stage.enrich(event)
        assert errors == []
        if event["actor"]["type"] == "user":
            assert context["directory"]["department"] == event["attributes"]["department"]
        if event["source"]["ip"].startswith("10.20."):
            assert context["network_type"] == "private" and "geo" not in context
        else:
            assert context["geo"]["country_iso_code"]


def test_an_enricher_that_raises_does_not_stop_the_event() -> None:
    stage = EnrichStage([Broken(), Fixed(), Buggy()])
    before = (_errors_counted("broken"), _errors_counted("buggy"))
    context, errors = stage.enrich(make_event())
    assert context == {"network_type": "public"}  # the others still add theirs
    assert errors == ["broken: lookup service on fire", "buggy: 'no such field'"]
    stage.enrich(make_event())
    assert _errors_counted("broken") == before[0] + 2
    assert _errors_counted("buggy") == before[1] + 2


def test_failures_are_logged_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    stage = EnrichStage([Broken()])
    with caplog.at_level("WARNING", logger="auditstream.enrich"):
        for _ in range(50):
            stage.enrich(make_event())
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 1


def test_a_bad_source_stops_start_up_with_its_name(examples: Path) -> None:
    (examples / "classification.yaml").write_text("rules: [")
    with pytest.raises(ConfigError, match=r"classification\.yaml: not valid YAML"):
        EnrichStage.from_settings(_settings(examples))


def _decode(value: bytes, reader: dict[str, Any], writer: dict[str, Any]) -> Any:
    return schemaless_reader(io.BytesIO(value[10:]), writer, reader)


def test_context_encodes_as_enriched_event_v2_and_becomes_an_ecs_document(
    stage: EnrichStage,
) -> None:
    v2 = default_store().latest(ENRICHED_EVENT)
    assert v2.version == 2
    event = make_event(
        source={
            "ip": "89.160.20.112",
            "port": 1,
            "user_agent": "Mozilla/5.0 (compatible; bingbot/2.0)",
        },
        resource={"type": "employee_record", "id": "emp-0001", "name": None},
        service={"name": "hr-portal", "host": None, "environment": None},
    )
    context, errors = stage.enrich(event)
    record = {
        "event": event,
        "content_hash": "ab" * 32,
        "received_at": datetime.now(tz=UTC),
        "source_topic": "access-events",
        "source_partition": 0,
        "source_offset": 1,
        "encoding": "single_object",
        "writer_schema": "access-events-value v1 (id 1)",
        **context,
        "enrichment_errors": errors,
    }
    decoded = _decode(encode(record, v2, Encoding.SINGLE_OBJECT), v2.parsed, v2.parsed)
    assert decoded["geo"]["location"] == {"lat": 58.4167, "lon": 15.6167}
    assert decoded["classification"]["data_categories"] == ["PII"]
    doc = ecs.to_document(decoded)
    assert doc["source"]["geo"]["city_name"] == "Linköping"
    assert doc["auditstream"]["user_agent"]["is_bot"] is True
    assert doc["auditstream"]["resource"]["sensitivity"] == "confidential"


def test_bench_enrich_prints_microseconds_per_event(capsys: pytest.CaptureFixture[str]) -> None:
    per_event = bench_enrich(500)
    assert per_event > 0
    out = capsys.readouterr().out
    assert "µs/event" in out and "geoip, directory, user_agent, classification" in out
