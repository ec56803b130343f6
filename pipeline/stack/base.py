"""The contract every local service follows: install, prepare, launch, wait, stop."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from pipeline.errors import StackError
from pipeline.settings import Settings
from pipeline.stack import common

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    """What ``stack status`` shows for one service."""

    name: str
    pid: int | None
    port: int
    healthy: bool
    log: Path
    address: str = ""  # what clients connect to: host:port or a URL
    data_dir: Path | None = None
    configured_version: str = ""  # what the settings ask for (what `up` would start)
    version: str | None = None  # read from the running service; None: stopped or not readable

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def shown_version(self) -> str:
        """The running version, else the configured one; both when they differ."""
        if self.version is None:
            return self.configured_version or "-"
        if self.configured_version and self.version != self.configured_version:
            return f"{self.version} (settings: {self.configured_version})"
        return self.version

    @property
    def state(self) -> str:
        if self.healthy:
            return "healthy"
        return "unhealthy" if self.running else "stopped"


def absolute(path: Path) -> Path:
    """An absolute path without resolving symlinks (it must match what shells print)."""
    return Path(os.path.abspath(path))


class Service(ABC):
    """One local process of the stack, identified by its command line (``markers``)."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = settings.stack
        self.state_dir = absolute(settings.stack.state_dir)
        self.cache_dir = absolute(settings.stack.cache_dir)
        self.logs_dir = self.state_dir / "logs"
        self.run_dir = self.state_dir / "run"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what each service defines ------------------------------------------------

    @abstractmethod
    def port_settings(self) -> list[tuple[str, int]]:
        """(``stack`` settings field, port) pairs; the first is the one clients use."""

    @abstractmethod
    def markers(self) -> list[str]:
        """Arguments that together identify this stack's process in ``/proc/*/cmdline``."""

    @abstractmethod
    def install(self) -> None:
        """Download or build into the cache, once per version."""

    @abstractmethod
    def prepare(self) -> None:
        """Create state directories and write configuration."""

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that starts the service."""

    @abstractmethod
    def healthy(self) -> bool:
        """A quick check that the service answers requests."""

    def environment(self) -> dict[str, str] | None:
        return None

    def working_dir(self) -> Path:
        return self.state_dir

    def after_start(self) -> None:  # noqa: B027 - optional hook
        """Idempotent setup once the service is healthy."""

    def address(self) -> str:
        """What clients connect to."""
        return f"{common.HOST}:{self.port}"

    def data_path(self) -> Path | None:
        """Where the service keeps its data, if it keeps any."""
        return None

    def configured_version(self) -> str:
        """The version the settings ask for; empty when the service has none."""
        return ""

    def running_version(self, pid: int) -> str | None:
        """The version of the running process ``pid``, read from it; None when unknown."""
        return None

    # -- shared behaviour ---------------------------------------------------------

    @property
    def port(self) -> int:
        return self.port_settings()[0][1]

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / f"{self.name}.log"

    def log_files(self) -> list[Path]:
        """Logs whose tail explains a failed start."""
        return [self.log_file]

    def pid(self) -> int | None:
        """The pid of this stack's running process, or None."""
        markers = self.markers()
        pid = common.read_pid(self.pid_file)
        if pid is not None and common.pid_alive(pid) and set(markers) <= set(common.cmdline(pid)):
            return pid
        found = common.find_pids(markers)
        return found[0] if found else None

    def alive(self) -> bool:
        """True while the process started (or found) is still running."""
        if self._proc is not None and self._proc.poll() is None:
            return True
        return self.pid() is not None

    def check_ports(self) -> None:
        """Raise StackError when a port this service needs is held by another process."""
        for field, port in self.port_settings():
            if not common.port_in_use(port):
                continue
            owners = ", ".join(common.describe_pid(p) for p in common.listener_pids(port))
            raise StackError(
                f"port {port} ({self.name}) on {common.HOST} is already in use by "
                f"{owners or 'another process'}, which is not this stack's {self.name}; stop it, "
                f"or pick a free port with AUDITSTREAM_STACK__{field.upper()}"
            )

    def launch(self) -> None:
        """Start the process detached (own session), output appended to its log."""
        common.make_dirs(self.logs_dir, self.run_dir)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with self.launch_log().open("ab") as out:
            out.write(f"=== auditstream: starting {self.name} at {stamp} ===\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.working_dir(),
                env=self.environment(),
                start_new_session=True,
            )
        self.write_pid_file(self._proc.pid)

    def launch_log(self) -> Path:
        return self.log_file

    def write_pid_file(self, pid: int) -> None:
        self.pid_file.write_text(f"{pid}\n")

    def wait_ready(self, deadline: float) -> None:
        """Wait until healthy; raise StackError if the process dies or time runs out."""
        while True:
            if self.healthy():
                return
            if not self.alive():
                raise StackError(
                    f"{self.name} exited during start{self._exit_note()}; {self._tails()}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} did not become healthy on {common.HOST}:{self.port} within "
                    f"{self.stack.start_timeout_s:.0f} s (AUDITSTREAM_STACK__START_TIMEOUT_S); "
                    f"{self._tails()}"
                )
            time.sleep(0.5)

    def _exit_note(self) -> str:
        if self._proc is not None and self._proc.returncode is not None:
            return f" (exit status {self._proc.returncode})"
        return ""

    def _tails(self) -> str:
        parts = [
            f"last lines of {path}:\n{common.tail(path)}"
            for path in self.log_files()
            if path.exists()
        ]
        return "\n".join(parts) or f"no log was written under {self.logs_dir}"

    def start(self) -> bool:
        """Start unless already running, wait until healthy; True if it was launched."""
        launched = False
        if self.pid() is None:
            self.check_ports()
            self.install()
            self.prepare()
            self.launch()
            launched = True
        self.wait_ready(time.monotonic() + self.stack.start_timeout_s)
        self.after_start()
        return launched

    def stop(self, grace_s: float = common.STOP_GRACE_S) -> bool:
        """SIGTERM, then SIGKILL after ``grace_s``; True if something was running."""
        pid = self.pid()
        if pid is not None:
            common.terminate(pid, grace_s)
        self._forget()
        return pid is not None

    def kill(self) -> bool:
        """SIGKILL at once (tests use it to simulate a crash); True if it was running."""
        pid = self.pid()
        if pid is not None:
            common.kill(pid)
        self._forget()
        return pid is not None

    def _forget(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus(
            name=self.name,
            pid=pid,
            port=self.port,
            healthy=pid is not None and self.healthy(),
            log=self.log_file,
            address=self.address(),
            data_dir=self.data_path(),
            configured_version=self.configured_version(),
            version=self._probe_version(pid) if pid is not None else None,
        )

    def _probe_version(self, pid: int) -> str | None:
        try:
            return self.running_version(pid)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            log.debug("version of %s (pid %d) not read: %s", self.name, pid, exc)
            return None
