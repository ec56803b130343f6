"""An archive in a local directory: claimed by ``link(2)``, files read-only.

``put_if_absent`` writes a hidden temporary file in the target directory,
fsyncs it, makes it read-only (0444), then hard-links it to the final name:
``link`` fails if the name exists, so exactly one writer claims each key, and
readers never see a partial object. The directory is fsynced so the name
survives a crash. Read-only files only stop accidents and honest mistakes; S3
Object Lock is the production mode (DESIGN, Integrity).

The lock of a file is its recorded write time (its modification time, which
the pipeline never changes after the write) plus ``lock_period``
(``archive.lock_days``): :meth:`FilesystemStore.delete` refuses a file before
then, as S3 refuses a locked version. Without a lock period nothing is locked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.errors import TransportError
from pipeline.sinks.storage.base import ObjectLocked, ObjectNotFound, ObjectStore, check_key

READ_ONLY = 0o444


class FilesystemStore(ObjectStore):
    def __init__(self, root: Path, lock_period: timedelta | None = None) -> None:
        self.root = Path(root).absolute()
        self.location = str(self.root)
        self.lock_period = lock_period

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        final = self._path(key)
        try:
            self._make_dirs(final.parent)
            if final.exists():
                return False
            tmp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, READ_ONLY)
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            _fsync_dir(final.parent)
            return True
        except OSError as exc:
            raise TransportError(f"archive at {self.location}: writing {key}: {exc}") from exc

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                return fh.read() if max_bytes is None else fh.read(max_bytes)
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} is not in the archive at {self.location}") from None
        except OSError as exc:
            raise TransportError(f"archive at {self.location}: reading {key}: {exc}") from exc

    def list(self, prefix: str) -> list[str]:
        # Walk only the directories the prefix can reach.
        head, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*head.split("/")) if head else self.root
        keys: list[str] = []
        try:
            for dirpath, dirnames, filenames in os.walk(start):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                rel = Path(dirpath).relative_to(self.root).as_posix()
                base = "" if rel == "." else rel + "/"
                keys.extend(
                    base + name
                    for name in filenames
                    if not name.startswith(".") and (base + name).startswith(prefix)
                )
        except OSError as exc:
            raise TransportError(f"archive at {self.location}: listing {prefix}: {exc}") from exc
        return sorted(keys, key=lambda k: k.encode())

    def retain_until(self, key: str) -> datetime | None:
        if self.lock_period is None:
            return None
        try:
            written = os.stat(self._path(key)).st_mtime
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} is not in the archive at {self.location}") from None
        except OSError as exc:
            raise TransportError(f"archive at {self.location}: reading {key}: {exc}") from exc
        return datetime.fromtimestamp(written, UTC) + self.lock_period

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            until = self.retain_until(key)
        except ObjectNotFound:
            return
        if until is not None and until > datetime.now(UTC):
            raise ObjectLocked(
                f"{key} in {self.location} is locked until {until:%Y-%m-%d %H:%M:%S}Z "
                "(write time + archive.lock_days); it cannot be deleted before then"
            )
        try:
            path.unlink()
            _fsync_dir(path.parent)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TransportError(f"archive at {self.location}: deleting {key}: {exc}") from exc

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
