"""What an archive store offers: claim a key once, read it, list in key order.

Keys are ``/``-separated paths such as
``access-events/00003/00000000000000001234.avro``. :meth:`ObjectStore.put_if_absent`
is the claim (DESIGN, Accounting): it creates the object only if no object has
that key, atomically, and says whether it did. Objects are never overwritten or
deleted by the pipeline.

Failures of the store itself raise :class:`~pipeline.errors.TransportError`
(retried by the sink); a missing key raises :class:`ObjectNotFound`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from pipeline.errors import AuditstreamError

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class ObjectNotFound(AuditstreamError, KeyError):
    """No object has this key."""


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


def check_key(key: str) -> str:
    """Refuse keys that could escape a directory or differ between backends."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid object key {key!r}")
    return key
