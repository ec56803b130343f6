"""``auditstream stack status``: versions read from the services, and the table and JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pipeline.settings import Settings, StackSettings
from pipeline.stack import LocalStack, common
from pipeline.stack.base import ServiceStatus
from pipeline.stack.commands import EXIT_NOT_ALL_UP, status, status_document, status_table
from pipeline.stack.kafka import classpath_dir, version_in_libs
from pipeline.stack.objectstore import parse_go_buildinfo, parse_version_output


def _row(**fields: object) -> ServiceStatus:
    base: dict[str, object] = {
        "name": "kafka",
        "pid": 4242,
        "port": 9092,
        "healthy": True,
        "log": Path("/state/logs/kafka.log"),
        "address": "127.0.0.1:9092",
        "data_dir": Path("/state/kafka/data"),
        "configured_version": "4.4.0",
        "version": "4.4.0",
    }
    base.update(fields)
    return ServiceStatus(**base)  # type: ignore[arg-type]


ROWS = [
    _row(),
    _row(
        name="opensearch",
        pid=None,
        port=9200,
        healthy=False,
        log=Path("/state/logs/opensearch/auditstream-local.log"),
        address="http://127.0.0.1:9200",
        data_dir=Path("/state/opensearch/data"),
        configured_version="2.19.6",
        version=None,
    ),
    _row(
        name="s3",
        pid=77,
        port=7070,
        healthy=False,
        log=Path("/state/logs/s3.log"),
        address="http://127.0.0.1:7070",
        data_dir=Path("/state/s3/data"),
        configured_version="v1.8.0",
        version="v1.7.0",
    ),
]


def test_shown_version_prefers_the_running_one_and_flags_a_mismatch() -> None:
    assert _row().shown_version == "4.4.0"
    assert _row(version=None).shown_version == "4.4.0"
    assert _row(version="4.3.1").shown_version == "4.3.1 (settings: 4.4.0)"
    assert _row(version=None, configured_version="").shown_version == "-"


def test_status_table_aligns_every_column_with_health_version_address_and_data() -> None:
    lines = status_table(ROWS).splitlines()
    assert lines[0].split() == ["service", "state", "pid", "version", "address", "data", "log"]
    assert lines[1].split() == [
        "kafka",
        "healthy",
        "4242",
        "4.4.0",
        "127.0.0.1:9092",
        "/state/kafka/data",
        "/state/logs/kafka.log",
    ]
    assert lines[2].split() == [
        "opensearch",
        "stopped",
        "-",
        "2.19.6",
        "http://127.0.0.1:9200",
        "/state/opensearch/data",
        "/state/logs/opensearch/auditstream-local.log",
    ]
    assert "unhealthy  77" in lines[3]
    assert "v1.7.0 (settings: v1.8.0)" in lines[3]
    # Every column but the last starts at the same offset on every line.
    for header in ("state", "pid", "version", "address", "data", "log"):
        column = lines[0].index(header)
        assert all(line[column - 2 : column] == "  " for line in lines), header
    assert all(line == line.rstrip() for line in lines)


def test_status_document_has_every_field_with_nulls_for_unknowns() -> None:
    document = status_document(ROWS)
    assert document["healthy"] is False
    kafka, opensearch, s3 = document["services"]
    assert kafka == {
        "name": "kafka",
        "state": "healthy",
        "healthy": True,
        "pid": 4242,
        "version": "4.4.0",
        "configured_version": "4.4.0",
        "address": "127.0.0.1:9092",
        "port": 9092,
        "data_dir": "/state/kafka/data",
        "log": "/state/logs/kafka.log",
    }
    assert opensearch["pid"] is None and opensearch["version"] is None
    assert opensearch["state"] == "stopped"
    assert s3["version"] == "v1.7.0" and s3["configured_version"] == "v1.8.0"
    assert json.loads(json.dumps(document)) == document
    assert status_document(ROWS[:1])["healthy"] is True


def test_status_command_prints_json_for_a_stopped_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kafka, ctrl, http, transport, s3 = common.free_ports(5)
    settings = Settings(
        stack=StackSettings(
            state_dir=tmp_path / "state",
            cache_dir=tmp_path / "cache",
            kafka_port=kafka,
            kafka_controller_port=ctrl,
            opensearch_port=http,
            opensearch_transport_port=transport,
            s3_port=s3,
        )
    )
    assert status(argparse.Namespace(json=True), settings) == EXIT_NOT_ALL_UP
    document = json.loads(capsys.readouterr().out)
    by_name = {s["name"]: s for s in document["services"]}
    assert list(by_name) == ["kafka", "opensearch", "s3"]
    assert by_name["kafka"]["address"] == f"127.0.0.1:{kafka}"
    assert by_name["opensearch"]["address"] == f"http://127.0.0.1:{http}"
    assert by_name["s3"]["address"] == f"http://127.0.0.1:{s3}"
    stack = LocalStack(settings)
    assert by_name["kafka"]["data_dir"] == str(stack.kafka.data_dir)
    assert by_name["opensearch"]["data_dir"] == str(stack.opensearch.data_dir)
    assert by_name["s3"]["data_dir"] == str(stack.s3.data_dir)
    for name, field in (
        ("kafka", "kafka_version"),
        ("opensearch", "opensearch_version"),
        ("s3", "versitygw_version"),
    ):
        assert by_name[name]["configured_version"] == getattr(settings.stack, field)
        assert by_name[name]["version"] is None and by_name[name]["state"] == "stopped"

    assert status(argparse.Namespace(json=False), settings) == EXIT_NOT_ALL_UP
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("service")
    assert settings.stack.opensearch_version in text


def test_kafka_version_from_the_broker_jar_on_the_classpath(tmp_path: Path) -> None:
    libs = tmp_path / "libs"
    libs.mkdir()
    for name in ("kafka-clients-4.4.0.jar", "kafka-server-4.4.0.jar", "kafka_2.13-4.4.0.jar"):
        (libs / name).touch()
    assert version_in_libs(libs) == "4.4.0"
    assert version_in_libs(tmp_path) is None
    argv = ["/jdk/bin/java", "-Xmx512m", "-cp", f"{libs}/*", "kafka.Kafka", "server.properties"]
    assert classpath_dir(argv) == libs
    assert classpath_dir(["java", "kafka.Kafka"]) is None


def test_versitygw_version_from_its_flag_or_go_buildinfo() -> None:
    assert parse_version_output("Version  : v1.8.0\nBuild    : abc\n") == "v1.8.0"
    assert parse_version_output("Version  : 1.8.0\n") == "v1.8.0"
    # `go install` builds carry no version in the flag output ...
    assert parse_version_output("Version  : git\nBuild    : norev\nBuildTime: none\n") is None
    assert parse_version_output("") is None
    # ... but Go embeds the module version in the binary.
    buildinfo = (
        "/cache/versitygw/v1.8.0/versitygw: go1.26.8\n"
        "\tpath\tgithub.com/versity/versitygw/cmd/versitygw\n"
        "\tmod\tgithub.com/versity/versitygw\tv1.8.0\th1:abc=\n"
        "\tdep\tgithub.com/Azure/azure-sdk-for-go/sdk/azcore\tv1.23.1\th1:def=\n"
    )
    assert parse_go_buildinfo(buildinfo) == "v1.8.0"
    assert parse_go_buildinfo("not a go binary") is None
