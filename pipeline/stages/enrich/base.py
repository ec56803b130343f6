"""The enricher contract, its error, and the file watcher the file-backed enrichers share.

An enricher is a small, pure class: built from settings, it takes one decoded
access event and returns the EnrichedEvent v2 fields it owns (``geo``,
``directory`` …), or nothing. It does no I/O per event: its sources are loaded
up front and, where they can change, reloaded by a :class:`WatchedFile` thread
that swaps in an immutable snapshot, so a lookup on the event loop never
waits for a disk.

Errors::

    AuditstreamError
    ├── ConfigError       a source file is missing or invalid at start-up (names the file)
    └── EnrichmentError   one enricher failed on one event; the stage records it, the event flows
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pipeline.errors import AuditstreamError, ConfigError

log = logging.getLogger("auditstream.enrich")

T = TypeVar("T")
Context = Mapping[str, Any]
NOTHING: Context = {}


class EnrichmentError(AuditstreamError):
    """An enricher could not add its context to one event; the event still flows."""


class Enricher(ABC):
    """Adds one kind of context to an event. ``enrich`` must not do I/O."""

    #: Short name: the ``enricher`` metric label and the prefix of recorded errors.
    name: ClassVar[str]
    #: The EnrichedEvent v2 fields ``enrich`` may return.
    fields: ClassVar[tuple[str, ...]]

    @abstractmethod
    def enrich(self, event: Mapping[str, Any]) -> Context:
        """The context for ``event`` (a subset of ``fields``); shared values, do not mutate."""

    def close(self) -> None:  # noqa: B027 - most enrichers hold nothing to release
        """Stop background work and release files."""


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class WatchedFile(Generic[T]):
    """A value loaded from a file and reloaded, off the event loop, when the file changes.

    ``load(path)`` runs once here (a failure is a :class:`ConfigError`) and then
    in a daemon thread whenever the file's mtime, size or inode changes, checked
    every ``interval_s``. ``current`` is swapped in one assignment, so readers
    see the old snapshot or the new one, never a mix. A reload that fails keeps
    the old snapshot and logs why; a missing file keeps it too (a replacement
    may be on its way).
    """

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        *,
        interval_s: float,
        what: str,
        watch: bool = True,
    ) -> None:
        self.path = path
        self._load = load
        self._what = what
        self._signature = _signature(path)
        if self._signature is None:
            raise ConfigError(f"{path}: {what} not found (check AUDITSTREAM_ENRICH__…)")
        self.current: T = load(path)
        self.reloads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if watch:
            self._thread = threading.Thread(
                target=self._run,
                args=(interval_s,),
                name=f"auditstream-watch-{path.name}",
                daemon=True,
            )
            self._thread.start()

    def reload_if_changed(self) -> bool:
        """Reload now if the file changed since the last load; True if a new snapshot is in."""
        signature = _signature(self.path)
        if signature is None or signature == self._signature:
            return False
        try:
            value = self._load(self.path)
        except Exception as exc:  # keep serving the last good snapshot
            log.warning("%s %s changed but was not reloaded: %s", self._what, self.path, exc)
            self._signature = signature  # do not retry the same bad file every interval
            return False
        self.current = value
        self._signature = signature
        self.reloads += 1
        log.info("%s reloaded from %s", self._what, self.path)
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.reload_if_changed()


def field(event: Mapping[str, Any], section: str, key: str) -> Any:
    """``event[section][key]``, or None where the section is absent or null."""
    part = event.get(section)
    return None if part is None else part.get(key)
