"""Process, port and tool helpers of the local stack."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.errors import StackError
from pipeline.stack import common, reaper
from pipeline.stack.opensearch import enterable_by, unzip_with_modes


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((common.HOST, 0))
    sock.listen()
    return sock


def test_a_listening_port_is_in_use_and_owned_by_us() -> None:
    with _listener() as sock:
        port = sock.getsockname()[1]
        assert common.port_in_use(port)
        assert common.port_open(port)
        assert os.getpid() in common.listener_pids(port)


def test_a_released_port_is_free() -> None:
    (port,) = common.free_ports(1)
    assert not common.port_in_use(port)
    assert not common.port_open(port)
    assert common.listener_pids(port) == []


def test_free_ports_are_distinct() -> None:
    ports = common.free_ports(5)
    assert len(set(ports)) == 5


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert common.tail(log, 3) == "line 97\nline 98\nline 99"
    assert "does not exist" in common.tail(tmp_path / "missing.log")


def test_failed_tool_reports_the_tail_of_its_output() -> None:
    script = "import sys; print('\\n'.join(f'out {i}' for i in range(50))); sys.exit(4)"
    with pytest.raises(StackError) as info:
        common.run_tool([sys.executable, "-c", script], "resolving jars")
    message = str(info.value)
    assert "resolving jars failed (exit 4)" in message
    assert "out 49" in message and "out 5\n" not in message


def test_missing_tool_is_named() -> None:
    with pytest.raises(StackError, match="no-such-tool-xyz is not installed"):
        common.run_tool(["no-such-tool-xyz"], "building")


def test_processes_are_found_by_their_arguments_and_terminated(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        assert common.find_pids([marker]) == [proc.pid]
        assert common.pid_alive(proc.pid)
        assert not common.terminate(proc.pid, grace_s=10)  # stopped by SIGTERM
        proc.wait(5)
        assert common.find_pids([marker]) == []
    finally:
        proc.kill()


def test_reaper_finds_processes_mentioning_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    inside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"{state}/x"])
    beside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"{state}2/x"])
    try:
        assert reaper.processes_using(state) == [inside.pid]
    finally:
        inside.kill()
        beside.kill()
        inside.wait()
        beside.wait()


def test_write_if_changed_writes_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.conf"
    assert common.write_if_changed(path, "x=1\n")
    assert not common.write_if_changed(path, "x=1\n")
    assert common.write_if_changed(path, "x=2\n")
    assert path.read_text() == "x=2\n"


def test_unzip_keeps_the_executable_bit(tmp_path: Path) -> None:
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("d/bin/run")
        info.external_attr = 0o755 << 16
        zf.writestr(info, "#!/bin/sh\n")
        zf.writestr("d/README", "hi")
    unzip_with_modes(archive, tmp_path / "out")
    assert os.access(tmp_path / "out" / "d" / "bin" / "run", os.X_OK)
    assert (tmp_path / "out" / "d" / "README").read_text() == "hi"


def test_a_closed_directory_is_reported_for_another_user(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)
    tmp_path.chmod(0o755)
    stranger = 65534
    found = enterable_by(closed / "inner", stranger, {65534})
    assert found == closed or (found is not None and closed.is_relative_to(found))
    assert enterable_by(closed / "inner", os.getuid(), set()) is None


def test_lock_files_keep_the_whole_version_name() -> None:
    assert common.lock_path(Path("/c/kafka/4.4.0")) == Path("/c/kafka/4.4.0.lock")
