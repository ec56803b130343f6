"""Create the archive bucket with S3 Object Lock before the archive sink starts.

docker-compose.yml runs this once as the ``s3-init`` service (the image holds a
copy at /opt/auditstream/share/create_archive_bucket.py); ``sink-archive``
starts only after it exited 0. It reads the same ``AUDITSTREAM_ARCHIVE__*``
settings as the sink, so both always name the same endpoint and bucket.

Object Lock can only be switched on when a bucket is created, so this step
creates it with ``ObjectLockEnabledForBucket=True`` and then checks that the
store reports the lock as enabled: a bucket that exists without it (made by
hand, or by a store started without a versioning directory) is an error, never
accepted quietly. Retention itself (mode and days) is set per object by the
archive sink. Running it again is harmless.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pipeline.settings import ArchiveSettings, load_settings

# How long to keep retrying a store that does not answer yet.
CONNECT_TIMEOUT_S = 60.0


def s3_client(archive: ArchiveSettings) -> Any:
    import boto3
    from botocore.config import Config

    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    return boto3.client(
        "s3",
        endpoint_url=archive.s3_endpoint,
        region_name=archive.s3_region,
        aws_access_key_id=secret(archive.s3_access_key),
        aws_secret_access_key=secret(archive.s3_secret_key),
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
    )


def ensure_locked_bucket(client: Any, bucket: str, region: str) -> str:
    """Create ``bucket`` with Object Lock unless it exists; return what was done.

    Raises ``RuntimeError`` when the bucket belongs to someone else or exists
    without Object Lock.
    """
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": bucket, "ObjectLockEnabledForBucket": True}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
        done = "created"
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "BucketAlreadyOwnedByYou":
            done = "already there"
        elif code == "BucketAlreadyExists":
            raise RuntimeError(
                f"bucket {bucket!r} exists but belongs to another account; set "
                "AUDITSTREAM_ARCHIVE__S3_BUCKET to a bucket these credentials own"
            ) from exc
        else:
            raise

    try:
        conf = client.get_object_lock_configuration(Bucket=bucket)
        enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
            raise
        enabled = None
    if enabled != "Enabled":
        raise RuntimeError(
            f"bucket {bucket!r} has no Object Lock, and it cannot be turned on later: "
            "delete the bucket (or use another AUDITSTREAM_ARCHIVE__S3_BUCKET) and check "
            "that the store runs with versioning (versitygw: posix --versioning-dir)"
        )
    return done


def main() -> int:
    archive = load_settings().archive
    if archive.backend != "s3":
        print(
            "create_archive_bucket: AUDITSTREAM_ARCHIVE__BACKEND is "
            f"{archive.backend!r}, not 's3': this step only prepares an S3 archive",
            file=sys.stderr,
        )
        return 2
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(archive)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            done = ensure_locked_bucket(client, archive.s3_bucket, archive.s3_region)
            break
        except RuntimeError as exc:
            print(f"create_archive_bucket: {exc}", file=sys.stderr)
            return 1
        except (BotoCoreError, ClientError) as exc:
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(exc, ClientError) and status is not None and status < 500:
                print(f"create_archive_bucket: {exc}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(
                    f"create_archive_bucket: S3 store at {archive.s3_endpoint} failed for "
                    f"{CONNECT_TIMEOUT_S:.0f} s: {exc}; is the `s3` service healthy?",
                    file=sys.stderr,
                )
                return 1
            time.sleep(2)
    print(f"archive bucket {archive.s3_bucket!r} at {archive.s3_endpoint}: {done}, Object Lock on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
