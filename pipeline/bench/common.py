"""What every bench mode shares: progress lines and the process's memory."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def say(message: str) -> None:
    """A progress line on stderr (the figures go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def rss_mb() -> float:
    """The resident set size now, in MB (from /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
