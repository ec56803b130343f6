"""Start, wait, stop and error reporting of a stack service, with stand-in processes."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from pipeline.errors import StackError
from pipeline.settings import Settings, StackSettings
from pipeline.stack import LocalStack, common
from pipeline.stack.base import Service

SERVE = """
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[2])))
sock.listen()
time.sleep(120)
"""
CRASH = "import sys\nfor i in range(40): print('boom', i)\nsys.exit(3)"
HANG = "import time; time.sleep(120)"


class StandIn(Service):
    """A service whose process is a small Python script."""

    name = "standin"

    def __init__(self, settings: Settings, script: str) -> None:
        super().__init__(settings)
        self.script = script

    def port_settings(self) -> list[tuple[str, int]]:
        return [("kafka_port", self.stack.kafka_port)]

    def markers(self) -> list[str]:
        return [str(self.state_dir / "standin-marker")]

    def install(self) -> None:
        pass

    def prepare(self) -> None:
        common.make_dirs(self.state_dir)

    def command(self) -> list[str]:
        return [sys.executable, "-u", "-c", self.script, *self.markers(), str(self.port)]

    def healthy(self) -> bool:
        return common.port_open(self.port)


def _settings(tmp_path: Path, **stack: object) -> Settings:
    kafka, ctrl, http, transport, s3 = common.free_ports(5)
    return Settings(
        stack=StackSettings(
            state_dir=tmp_path / "state",
            cache_dir=tmp_path / "cache",
            kafka_port=kafka,
            kafka_controller_port=ctrl,
            opensearch_port=http,
            opensearch_transport_port=transport,
            s3_port=s3,
            **stack,  # type: ignore[arg-type]
        )
    )


def test_start_waits_until_healthy_and_is_idempotent(tmp_path: Path) -> None:
    service = StandIn(_settings(tmp_path), SERVE)
    try:
        assert service.start() is True
        pid = service.pid()
        assert pid is not None and service.status().healthy
        assert service.start() is False
        assert service.pid() == pid
    finally:
        assert service.stop() is True
    assert service.stop() is False
    assert service.status().state == "stopped"


def test_a_service_that_dies_during_start_shows_its_log(tmp_path: Path) -> None:
    service = StandIn(_settings(tmp_path), CRASH)
    with pytest.raises(StackError) as info:
        service.start()
    message = str(info.value)
    assert "standin exited during start (exit status 3)" in message
    assert "boom 39" in message and "boom 5\n" not in message
    assert str(service.log_file) in message


def test_a_service_that_never_answers_times_out(tmp_path: Path) -> None:
    service = StandIn(_settings(tmp_path, start_timeout_s=1.0), HANG)
    try:
        with pytest.raises(StackError, match=r"did not become healthy .* within 1 s"):
            service.start()
    finally:
        service.kill()
    assert service.pid() is None


def test_a_port_held_by_another_process_is_named(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with socket.socket() as sock:
        sock.bind((common.HOST, settings.stack.kafka_port))
        sock.listen()
        with pytest.raises(StackError) as info:
            LocalStack(settings).up()
    message = str(info.value)
    assert f"port {settings.stack.kafka_port} (kafka)" in message
    assert "AUDITSTREAM_STACK__KAFKA_PORT" in message
    assert "pytest" in message or "python" in message
    assert not (tmp_path / "cache").exists()  # refused before downloading anything


def test_nothing_running_is_stopped_and_reported(tmp_path: Path) -> None:
    stack = LocalStack(_settings(tmp_path))
    assert stack.down() == []
    rows = stack.status()
    assert [r.name for r in rows] == ["kafka", "opensearch", "s3"]
    assert all(r.state == "stopped" and r.pid is None for r in rows)
