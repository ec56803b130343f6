"""Configuration files the local stack writes."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.settings import StackSettings
from pipeline.stack.kafka import new_cluster_id, render_log4j2, render_pom, render_server_properties
from pipeline.stack.opensearch import render_opensearch_yml, rewrite_jvm_options


def _props(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_server_properties_describe_one_loopback_kraft_node(tmp_path: Path) -> None:
    stack = StackSettings(kafka_port=19092, kafka_controller_port=19093)
    props = _props(render_server_properties(stack, tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"


def test_pom_puts_the_log4j_binding_before_kafka() -> None:
    pom = render_pom("4.4.0", "2.25.3")
    assert pom.index("log4j-slf4j2-impl") < pom.index("kafka_2.13")
    assert "<version>4.4.0</version></dependency>" in pom
    assert pom.count("<version>2.25.3</version>") == 2


def test_log4j2_logs_to_the_given_file(tmp_path: Path) -> None:
    text = render_log4j2(tmp_path / "kafka.log")
    assert f"appender.file.fileName = {tmp_path / 'kafka.log'}" in text
    assert "rootLogger.appenderRef.file.ref = FILE" in text


def test_cluster_ids_are_22_url_safe_characters() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_opensearch_yml_is_a_single_loopback_node(tmp_path: Path) -> None:
    stack = StackSettings(opensearch_port=19200, opensearch_transport_port=19300)
    conf = yaml.safe_load(render_opensearch_yml(stack, tmp_path / "data", tmp_path / "logs"))
    assert conf["discovery.type"] == "single-node"
    assert conf["network.host"] == "127.0.0.1"
    assert conf["http.port"] == 19200 and conf["transport.port"] == 19300
    assert conf["path.data"] == str(tmp_path / "data")
    assert conf["path.logs"] == str(tmp_path / "logs")
    assert conf["cluster.routing.allocation.disk.threshold_enabled"] == "false"
    assert "action.auto_create_index" not in conf


def test_jvm_options_get_absolute_log_and_dump_paths() -> None:
    dist = (
        "-XX:HeapDumpPath=data\n"
        "-XX:ErrorFile=logs/hs_err_pid%p.log\n"
        "9-:-Xlog:gc*,gc+age=trace,safepoint:file=logs/gc.log:utctime,pid,tags:filecount=32\n"
    )
    out = rewrite_jvm_options(dist, Path("/s/logs/opensearch"), Path("/s/opensearch/data"))
    assert "-XX:HeapDumpPath=/s/opensearch/data\n" in out
    assert "-XX:ErrorFile=/s/logs/opensearch/hs_err_pid%p.log" in out
    assert "file=/s/logs/opensearch/gc.log:" in out
