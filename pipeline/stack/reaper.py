"""Stop a throwaway stack when the process that owns it exits, however it exits.

Test sessions start a stack in a temporary state dir; if pytest is killed
(``timeout``, SIGTERM, a crash) its fixture teardown never runs. The reaper,
started beside the stack, waits for the owner to exit, then stops every process
whose command line mentions the state dir and removes the dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipeline.stack import common


def processes_using(state_dir: Path) -> list[int]:
    """Pids (other than ours) with an argument that mentions ``state_dir``."""
    needle = f"{state_dir}/"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        if any(needle in f"{arg}/" for arg in common.cmdline(int(proc.name))):
            found.append(int(proc.name))
    return [pid for pid in found if common.pid_alive(pid)]


def reap(state_dir: Path, *, remove: bool) -> None:
    for pid in processes_using(state_dir):
        common.terminate(pid, grace_s=15)
    if remove:
        shutil.rmtree(state_dir, ignore_errors=True)


def spawn(state_dir: Path, *, remove: bool) -> subprocess.Popen[bytes]:
    """Start a reaper for ``state_dir`` owned by the current process."""
    argv = [sys.executable, "-m", "pipeline.stack.reaper", str(os.getpid()), str(state_dir)]
    return subprocess.Popen(
        [*argv, "--remove"] if remove else argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def main(argv: list[str]) -> int:
    owner, state_dir = int(argv[0]), Path(argv[1])
    while common.pid_alive(owner):
        time.sleep(1.0)
    reap(state_dir, remove="--remove" in argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
