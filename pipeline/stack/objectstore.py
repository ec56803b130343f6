"""An S3-compatible store with Object Lock: versitygw over a local directory."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import StackError
from pipeline.settings import Settings
from pipeline.stack import common
from pipeline.stack.base import Service

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

GO_PACKAGE = "github.com/versity/versitygw/cmd/versitygw"
GO_MODULE = "github.com/versity/versitygw"
_VERSION_LINE = re.compile(r"^Version\s*:\s*(\S+)", re.MULTILINE)


def parse_version_output(text: str) -> str | None:
    """The version in ``versitygw --version`` output; None for a ``go install`` build ("git")."""
    match = _VERSION_LINE.search(text)
    if match is None or re.fullmatch(r"v?\d+(\.\d+)+\S*", match[1]) is None:
        return None
    return match[1] if match[1].startswith("v") else f"v{match[1]}"


def parse_go_buildinfo(text: str) -> str | None:
    """The versitygw module version in ``go version -m`` output."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "mod" and fields[1] == GO_MODULE:
            return fields[2]
    return None


def s3_client(endpoint: str, access_key: str, secret_key: str, region: str) -> S3Client:
    """A boto3 S3 client with path-style addressing and short timeouts."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise StackError(
            "boto3 is needed for the local object store: pip install 'auditstream[s3]'"
        ) from exc
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 2},
        ),
    )


class ObjectStoreService(Service):
    name = "s3"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.bin_dir = self.cache_dir / "versitygw" / self.stack.versitygw_version
        self.binary = self.bin_dir / "versitygw"
        self.base = self.state_dir / "s3"
        self.data_dir = self.base / "data"
        self.versions_dir = self.base / "versions"
        self.sidecar_dir = self.base / "sidecar"

    @property
    def endpoint(self) -> str:
        return f"http://{common.HOST}:{self.port}"

    def port_settings(self) -> list[tuple[str, int]]:
        return [("s3_port", self.stack.s3_port)]

    def markers(self) -> list[str]:
        return [str(self.binary), str(self.data_dir)]

    def install(self) -> None:
        with common.file_lock(common.lock_path(self.bin_dir)):
            if self.binary.is_file() and os.access(self.binary, os.X_OK):
                return
            version = self.stack.versitygw_version
            log.info("building versitygw %s with go install (about 90 s)", version)
            common.make_dirs(self.cache_dir, self.bin_dir.parent, self.bin_dir)
            common.run_tool(
                ["go", "install", f"{GO_PACKAGE}@{version}"],
                f"building versitygw {version} with `go install`",
                env={**os.environ, "GOBIN": str(self.bin_dir)},
                cwd=self.bin_dir,
            )
            if not self.binary.is_file():
                raise StackError(f"`go install` succeeded but left no binary at {self.binary}")

    def prepare(self) -> None:
        common.make_dirs(self.state_dir, self.logs_dir, self.run_dir, self.base)
        common.make_dirs(self.data_dir, self.versions_dir, self.sidecar_dir, mode=0o700)

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--port",
            f"{common.HOST}:{self.port}",
            "--quiet",
            "posix",
            "--versioning-dir",
            str(self.versions_dir),
            "--sidecar",
            str(self.sidecar_dir),
            str(self.data_dir),
        ]

    def environment(self) -> dict[str, str]:
        """Credentials travel in the environment, not in the world-readable argv."""
        return {
            **os.environ,
            "ROOT_ACCESS_KEY_ID": self.stack.s3_access_key,
            "ROOT_SECRET_ACCESS_KEY": self.stack.s3_secret_key.get_secret_value(),
        }

    def working_dir(self) -> Path:
        return self.base

    def client(self) -> S3Client:
        return s3_client(
            self.endpoint,
            self.stack.s3_access_key,
            self.stack.s3_secret_key.get_secret_value(),
            self.settings.archive.s3_region,
        )

    def address(self) -> str:
        return self.endpoint

    def data_path(self) -> Path:
        return self.data_dir

    def configured_version(self) -> str:
        return self.stack.versitygw_version

    def running_version(self, pid: int) -> str | None:
        """``versitygw --version`` of the running binary; a ``go install`` build says "git",
        so then the module version Go embedded in it (``go version -m``)."""
        argv = common.cmdline(pid)
        binary = argv[0] if argv else str(self.binary)
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=5, check=False
        )
        found = parse_version_output(out.stdout)
        go = shutil.which("go")
        if found is not None or go is None:
            return found
        out = subprocess.run(
            [go, "version", "-m", binary], capture_output=True, text=True, timeout=5, check=False
        )
        return parse_go_buildinfo(out.stdout)

    def healthy(self) -> bool:
        if not common.port_open(self.port):
            return False
        try:
            self.client().list_buckets()
        except StackError:
            raise
        except Exception:
            return False
        return True

    def after_start(self) -> None:
        """Create the archive bucket with Object Lock, unless it exists."""
        bucket = self.settings.archive.s3_bucket
        client = self.client()
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in names:
            log.info("creating bucket %s with Object Lock", bucket)
            client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        try:
            lock = client.get_object_lock_configuration(Bucket=bucket)
            enabled = lock["ObjectLockConfiguration"].get("ObjectLockEnabled") == "Enabled"
        except client.exceptions.ClientError:
            enabled = False
        if not enabled:
            raise StackError(
                f"bucket {bucket} at {self.endpoint} exists without Object Lock; the archive "
                "needs it: remove the bucket or set AUDITSTREAM_ARCHIVE__S3_BUCKET to a new name"
            )
