"""Apache Kafka, one KRaft node (broker and controller), jars resolved with Maven."""

from __future__ import annotations

import base64
import itertools
import logging
import re
import shutil
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from pipeline.errors import StackError
from pipeline.settings import Settings, StackSettings
from pipeline.stack import common
from pipeline.stack.base import Service

log = logging.getLogger(__name__)

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MVN = ("mvn", "-B", "-ntp", "-Dstyle.color=never")
_COMPLETE = ".auditstream-complete"
_BROKER_JAR = re.compile(r"kafka_\d+\.\d+-(?P<version>\d[^-]*)\.jar")


def java_binary(stack: StackSettings) -> Path:
    java = stack.java_home / "bin" / "java"
    if not java.is_file():
        raise StackError(
            f"no java at {java}; install a Java 17 JDK or point AUDITSTREAM_STACK__JAVA_HOME at one"
        )
    return java


def render_pom(kafka_version: str, log4j_version: str) -> str:
    """A pom whose runtime dependencies are the broker's classpath.

    The log4j binding comes first so Maven's nearest-first rule picks the slf4j 2
    API it needs (Kafka itself declares slf4j 1.7, which would leave the broker silent).
    """
    deps = [
        ("org.apache.logging.log4j", "log4j-slf4j2-impl", log4j_version),
        ("org.apache.logging.log4j", "log4j-core", log4j_version),
        ("org.apache.kafka", "kafka_2.13", kafka_version),
    ]
    body = "".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>\n"
        for g, a, v in deps
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>auditstream.local</groupId>\n"
        f"  <artifactId>kafka-libs</artifactId>\n  <version>{kafka_version}</version>\n"
        "  <packaging>pom</packaging>\n"
        f"  <dependencies>\n{body}  </dependencies>\n"
        "</project>\n"
    )


def version_in_libs(libs_dir: Path) -> str | None:
    """The broker version of a libs dir, from its ``kafka_<scala>-<version>.jar``."""
    for jar in sorted(libs_dir.glob("kafka_*.jar")):
        match = _BROKER_JAR.fullmatch(jar.name)
        if match:
            return match["version"]
    return None


def classpath_dir(argv: list[str]) -> Path | None:
    """The directory of a ``-cp <dir>/*`` argument of a java command line."""
    for flag, value in itertools.pairwise(argv):
        if flag in ("-cp", "-classpath") and value.endswith("/*"):
            return Path(value[:-2])
    return None


def render_server_properties(stack: StackSettings, data_dir: Path) -> str:
    """server.properties of a single node that is broker and controller, on loopback."""
    host, port, ctrl = common.HOST, stack.kafka_port, stack.kafka_controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{ctrl}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctrl}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
    }
    lines = ["# Written by `auditstream stack up`; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def render_log4j2(log_file: Path) -> str:
    """log4j2 properties sending the broker's log to one file."""
    return (
        "status = warn\n"
        "appender.file.type = File\n"
        "appender.file.name = FILE\n"
        f"appender.file.fileName = {log_file}\n"
        "appender.file.append = true\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.file.ref = FILE\n"
        "logger.request.name = kafka.request.logger\n"
        "logger.request.level = WARN\n"
    )


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64, not starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaService(Service):
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        version_dir = self.cache_dir / "kafka" / self.stack.kafka_version
        self.version_dir = version_dir
        self.libs_dir = version_dir / "libs"
        self.home = self.state_dir / "kafka"
        self.data_dir = self.home / "data"
        self.properties = self.home / "server.properties"
        self.log4j = self.home / "log4j2.properties"

    def port_settings(self) -> list[tuple[str, int]]:
        return [
            ("kafka_port", self.stack.kafka_port),
            ("kafka_controller_port", self.stack.kafka_controller_port),
        ]

    def markers(self) -> list[str]:
        return ["kafka.Kafka", str(self.properties)]

    def _coordinates(self) -> str:
        return f"kafka_2.13:{self.stack.kafka_version} log4j:{self.stack.log4j_version}\n"

    def install(self) -> None:
        with common.file_lock(common.lock_path(self.version_dir)):
            marker = self.libs_dir / _COMPLETE
            if marker.is_file() and marker.read_text() == self._coordinates():
                return
            log.info("resolving Kafka %s jars with Maven", self.stack.kafka_version)
            common.make_dirs(self.cache_dir, self.version_dir.parent, self.version_dir)
            pom = self.version_dir / "pom.xml"
            pom.write_text(render_pom(self.stack.kafka_version, self.stack.log4j_version))
            staging = self.version_dir / "libs.partial"
            shutil.rmtree(staging, ignore_errors=True)
            common.run_tool(
                [
                    *MVN, "-f", str(pom),
                    f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                    f"-DoutputDirectory={staging}",
                    "-DincludeScope=runtime",
                ],
                f"resolving Kafka {self.stack.kafka_version} jars with Maven",
                cwd=self.version_dir,
            )  # fmt: skip
            (staging / _COMPLETE).write_text(self._coordinates())
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            staging.rename(self.libs_dir)

    def prepare(self) -> None:
        java = java_binary(self.stack)
        common.make_dirs(self.state_dir, self.home, self.data_dir, self.logs_dir, self.run_dir)
        common.write_if_changed(
            self.properties, render_server_properties(self.stack, self.data_dir)
        )
        common.write_if_changed(self.log4j, render_log4j2(self.log_file))
        if (self.data_dir / "meta.properties").exists():
            return
        common.run_tool(
            [
                str(java), "-cp", f"{self.libs_dir}/*", "kafka.tools.StorageTool", "format",
                "-t", new_cluster_id(), "-c", str(self.properties), "--ignore-formatted",
            ],
            "formatting the Kafka storage",
        )  # fmt: skip

    def command(self) -> list[str]:
        return [
            str(java_binary(self.stack)),
            "-Xms256m",
            f"-Xmx{self.stack.kafka_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{self.libs_dir}/*",
            "kafka.Kafka",
            str(self.properties),
        ]

    def address(self) -> str:
        return f"{common.HOST}:{self.port}"

    def data_path(self) -> Path:
        return self.data_dir

    def configured_version(self) -> str:
        return self.stack.kafka_version

    def running_version(self, pid: int) -> str | None:
        """From the broker jar on the running process's classpath."""
        return version_in_libs(classpath_dir(common.cmdline(pid)) or self.libs_dir)

    def healthy(self) -> bool:
        if not common.port_open(self.port):
            return False
        quiet = logging.getLogger(f"{__name__}.probe")
        quiet.setLevel(logging.CRITICAL)
        admin = AdminClient({"bootstrap.servers": f"{common.HOST}:{self.port}"}, logger=quiet)
        try:
            metadata = admin.list_topics(timeout=3)
        except Exception:
            return False
        return bool(metadata.brokers)
