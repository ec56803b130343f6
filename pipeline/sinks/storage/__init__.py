"""Archive object stores: a base contract and its backends (filesystem, S3)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from pipeline.sinks.storage.base import ObjectLocked, ObjectNotFound, ObjectStore, check_key
from pipeline.sinks.storage.filesystem import FilesystemStore

if TYPE_CHECKING:
    from pipeline.settings import ArchiveSettings

__all__ = [
    "FilesystemStore",
    "ObjectLocked",
    "ObjectNotFound",
    "ObjectStore",
    "check_key",
    "open_store",
]


def open_store(archive: ArchiveSettings) -> ObjectStore:
    """The store ``archive.backend`` names."""
    if archive.backend == "s3":
        from pipeline.sinks.storage.s3 import S3Store

        return S3Store.from_settings(archive)
    return FilesystemStore(archive.path, lock_period=timedelta(days=archive.lock_days))
