"""An archive in an S3 bucket: claimed by ``If-None-Match: *``, locked by Object Lock.

``put_object(..., IfNoneMatch="*")`` creates the key only if it does not exist;
S3 answers ``412 PreconditionFailed`` to every later writer, which keeps the
first body (DESIGN, Accounting). When the bucket has Object Lock enabled, each
object is put with the configured mode (COMPLIANCE by default) and a
retain-until date ``lock_days`` ahead, so nobody, root account included, can
delete or overwrite it before then. Each put carries a SHA-256 checksum the
store verifies on receipt. :meth:`S3Store.retain_until` reads the lock back
from the store (the latest of every version's), and :meth:`S3Store.delete`
removes every version of a key, which the store refuses while one is locked.

Needs ``boto3`` (``pip install 'auditstream[s3]'``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, TransportError
from pipeline.sinks.storage.base import ObjectLocked, ObjectNotFound, ObjectStore, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from pipeline.settings import ArchiveSettings

_PRECONDITION = {"PreconditionFailed", "412"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_CONFIG = {
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidBucketName",
    "AuthorizationHeaderMalformed",
}
_NO_LOCK = {"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"}
_NO_RETENTION = _NO_LOCK | {"NoSuchObjectLockConfiguration", "InvalidRequest"}
_LOCKED = {"AccessDenied", "InvalidRequest", "ObjectLocked"}


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ConfigError("archive.backend=s3 needs boto3: pip install 'auditstream[s3]'") from None
    return boto3


class S3Store(ObjectStore):
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        lock_mode: str = "COMPLIANCE",
        lock_days: int = 400,
        lock_period: timedelta | None = None,
        use_lock: bool | None = None,
        checksum: bool = True,
        endpoint: str | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.lock_mode = lock_mode
        self.lock_days = lock_days
        self.lock_period = lock_period or timedelta(days=lock_days)
        self.checksum = checksum
        self._use_lock = use_lock
        where = f" at {endpoint}" if endpoint else ""
        self.location = f"s3://{bucket}{where}"

    @classmethod
    def from_settings(cls, archive: ArchiveSettings) -> S3Store:
        from botocore.config import Config

        boto3 = _boto3()
        client = boto3.client(
            "s3",
            endpoint_url=archive.s3_endpoint,
            region_name=archive.s3_region,
            aws_access_key_id=(
                archive.s3_access_key.get_secret_value() if archive.s3_access_key else None
            ),
            aws_secret_access_key=(
                archive.s3_secret_key.get_secret_value() if archive.s3_secret_key else None
            ),
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=10,
                read_timeout=60,
            ),
        )
        return cls(
            client,
            archive.s3_bucket,
            lock_mode=archive.lock_mode,
            lock_days=archive.lock_days,
            endpoint=archive.s3_endpoint,
        )

    # -- the interface ---------------------------------------------------------

    def put_if_absent(self, key: str, data: bytes) -> bool:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": check_key(key),
            "Body": data,
            "IfNoneMatch": "*",
            "ContentType": "application/json" if key.endswith(".json") else "application/avro",
        }
        if self.checksum:
            params["ChecksumAlgorithm"] = "SHA256"
        if self.object_lock:
            params["ObjectLockMode"] = self.lock_mode
            params["ObjectLockRetainUntilDate"] = datetime.now(UTC) + self.lock_period
        try:
            self.client.put_object(**params)
        except Exception as exc:
            if _code(exc) in _PRECONDITION:
                return False
            raise self._translate(exc, f"writing {key}") from exc
        return True

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": check_key(key)}
        if max_bytes is not None:
            params["Range"] = f"bytes=0-{max_bytes - 1}"
        try:
            body: bytes = self.client.get_object(**params)["Body"].read()
        except Exception as exc:
            if _code(exc) in _NOT_FOUND:
                raise ObjectNotFound(f"{key} is not in {self.location}") from None
            raise self._translate(exc, f"reading {key}") from exc
        return body

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
        except Exception as exc:
            raise self._translate(exc, f"listing {prefix}") from exc
        return sorted(keys, key=lambda k: k.encode())

    def retain_until(self, key: str) -> datetime | None:
        versions = self._versions(key)
        if not versions:
            raise ObjectNotFound(f"{key} is not in {self.location}")
        if not self.object_lock:
            return None
        latest: datetime | None = None
        for version in versions:
            try:
                found = self.client.get_object_retention(
                    Bucket=self.bucket, Key=key, VersionId=version
                )
            except Exception as exc:
                if _code(exc) in _NO_RETENTION:
                    continue  # a delete marker, or a version put without a lock
                raise self._translate(exc, f"reading the retention of {key}") from exc
            until = found.get("Retention", {}).get("RetainUntilDate")
            if until is not None and (latest is None or until > latest):
                latest = until
        return latest

    def delete(self, key: str) -> None:
        for version in self._versions(key):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version)
            except Exception as exc:
                if _code(exc) in _LOCKED:
                    raise ObjectLocked(
                        f"{self.location} refused to delete {key} (version {version}): "
                        f"{_code(exc)}: its Object Lock has not passed (or these credentials "
                        "may not delete)"
                    ) from exc
                raise self._translate(exc, f"deleting {key}") from exc

    # -- details ---------------------------------------------------------------

    def _versions(self, key: str) -> tuple[str, ...]:
        """Every version id of exactly ``key`` (delete markers included)."""
        found = []
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=check_key(key)
            )
            for page in pages:
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if item.get("Key") == key and "VersionId" in item:
                        found.append(item["VersionId"])
        except Exception as exc:
            raise self._translate(exc, f"listing the versions of {key}") from exc
        return tuple(found)

    @property
    def object_lock(self) -> bool:
        """Whether the bucket has Object Lock enabled (asked once)."""
        if self._use_lock is None:
            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
                self._use_lock = enabled == "Enabled"
            except Exception as exc:
                if _code(exc) not in _NO_LOCK:
                    raise self._translate(exc, "reading the Object Lock configuration") from exc
                self._use_lock = False
        return self._use_lock

    def _translate(self, exc: Exception, doing: str) -> Exception:
        code = _code(exc)
        if code in _CONFIG:
            return ConfigError(
                f"{self.location}: {doing}: {code}: {exc}; check archive.s3_bucket and the "
                "archive.s3_* credentials"
            )
        return TransportError(f"{self.location}: {doing}: {exc}")


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error") or {}
    code = error.get("Code")
    if code is None:
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return str(status) if status is not None else None
    return str(code)
