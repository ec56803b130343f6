"""What an archive store offers: claim a key once, read it, list in key order.

Keys are ``/``-separated paths such as
``access-events/00003/00000000000000001234.avro``. :meth:`ObjectStore.put_if_absent`
is the claim (DESIGN, Accounting): it creates the object only if no object has
that key, atomically, and says whether it did. Objects are never overwritten.
Only archive retention (``auditstream retention apply --archive``) deletes, and
only objects whose lock has passed (:meth:`ObjectStore.retain_until`); the store
itself refuses a locked object (:class:`ObjectLocked`).

Failures of the store itself raise :class:`~pipeline.errors.TransportError`
(retried by the sink); a missing key raises :class:`ObjectNotFound`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from datetime import datetime

from pipeline.errors import AuditstreamError

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class ObjectNotFound(AuditstreamError, KeyError):
    """No object has this key."""


class ObjectLocked(AuditstreamError):
    """The store refused to delete an object whose lock has not passed."""


class ObjectStore(ABC):
    """An immutable object store (a directory with read-only files, or an S3 bucket)."""

    #: where the objects live, for messages: a path or ``s3://bucket``
    location: str

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` durably; False (and nothing written) if it exists."""

    @abstractmethod
    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes (only the first ``max_bytes`` when given)."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix``, in ascending (byte) order."""

    @abstractmethod
    def retain_until(self, key: str) -> datetime | None:
        """When the object's lock ends (UTC); None when it is not locked."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object for good (every version); a missing key is not an error.

        Raises :class:`ObjectLocked` while its lock has not passed.
        """


def check_key(key: str) -> str:
    """Refuse keys that could escape a directory or differ between backends."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid object key {key!r}")
    return key
