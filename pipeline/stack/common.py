"""Process, port, file and download helpers shared by the local services."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pipeline.errors import StackError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOG_TAIL_LINES = 30
STOP_GRACE_S = 30.0
TOOL_TIMEOUT_S = 900.0


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return f"({path} does not exist)"
    text = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def tail_text(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when binding ``host:port`` fails as a server would (something listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_open(port: int, host: str = HOST, timeout_s: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct ports that are free right now (bound to port 0, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def listener_pids(port: int) -> list[int]:
    """Pids holding a listening socket on ``port`` (only those this user may inspect)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        if _socket_links(proc) & wanted:
            found.append(int(proc.name))
    return sorted(found)


def _socket_links(proc: Path) -> set[str]:
    try:
        fds = list((proc / "fd").iterdir())
    except OSError:
        return set()
    links: set[str] = set()
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            links.add(os.readlink(fd))
    return links


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid``, or [] when it is gone or hidden."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0") if part]


def describe_pid(pid: int) -> str:
    argv = cmdline(pid)
    text = " ".join(argv) if argv else "unknown command"
    return f"pid {pid} ({text[:120]})"


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def find_pids(markers: Sequence[str]) -> list[int]:
    """Pids whose argv contains every one of ``markers`` as a whole argument."""
    wanted = set(markers)
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and wanted <= set(cmdline(int(proc.name))):
            found.append(int(proc.name))
    return sorted(pid for pid in found if pid_alive(pid))


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def terminate(pid: int, grace_s: float = STOP_GRACE_S) -> bool:
    """SIGTERM ``pid``, wait up to ``grace_s``, then SIGKILL. True if it had to be killed."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return False
        time.sleep(0.2)
    log.warning("pid %d did not stop within %.0f s; sending SIGKILL", pid, grace_s)
    kill(pid)
    return True


def kill(pid: int) -> None:
    """SIGKILL ``pid`` and wait (briefly) until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def run_tool(
    argv: Sequence[str],
    what: str,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = TOOL_TIMEOUT_S,
) -> str:
    """Run a build/download tool; on failure raise StackError with the tail of its output."""
    log.debug("running %s", " ".join(argv))
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {argv[0]} is not installed or not on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, str) else ""
        raise StackError(
            f"{what}: `{' '.join(argv)}` did not finish within {timeout_s:.0f} s; "
            f"last output:\n{tail_text(out)}"
        ) from exc
    if done.returncode != 0:
        raise StackError(
            f"{what} failed (exit {done.returncode}): `{' '.join(argv)}`\n"
            f"last output:\n{tail_text(done.stdout)}"
        )
    return done.stdout


def lock_path(directory: Path) -> Path:
    """The lock file beside ``directory`` (``4.4.0`` → ``4.4.0.lock``)."""
    return directory.parent / f"{directory.name}.lock"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so concurrent installs or starts do not collide."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_dirs(*paths: Path, mode: int = 0o755) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds exactly that; True if written."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True
