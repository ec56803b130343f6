"""Running pipeline commands as real processes, and reading topics, for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition

from pipeline.settings import Settings, to_env


class PipelineProcess:
    """One ``auditstream`` subcommand in its own process, logging to a file."""

    def __init__(self, settings: Settings, *args: str, log_dir: Path, name: str) -> None:
        self.args = args
        self.settings = settings
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **env_overrides: str) -> PipelineProcess:
        env = {**os.environ, **to_env(self.settings), **env_overrides}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to commit or flush anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def pause(self) -> None:
        """SIGSTOP: every thread halts where it is; its group session runs out meanwhile."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: go on from wherever it was stopped."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def paused(self) -> bool:
        """Whether the process is stopped (by SIGSTOP, its own included)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        self.proc.send_signal(signal.SIGCONT)  # a stopped process handles SIGTERM only then
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def read_topic(
    settings: Settings,
    topic: str,
    expected: int,
    timeout: float = 120.0,
    until: Callable[[list[Message]], bool] | None = None,
) -> list[Message]:
    """Read ``topic`` from the beginning until ``expected`` records (or ``until``) or timeout."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"test-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    meta = consumer.list_topics(topic, timeout=30).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    done = until or (lambda msgs: len(msgs) >= expected)
    try:
        while time.monotonic() < deadline and not done(found):
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    found.append(msg)
    finally:
        consumer.close()
    return found
