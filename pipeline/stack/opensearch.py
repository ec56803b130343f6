"""OpenSearch, one node, from the minimal integ-test zip on Maven Central.

OpenSearch refuses to run as root: as root it runs as ``stack.opensearch_user``
(created when missing), which must be able to enter the cache and state dirs.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import shutil
import stat
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from pipeline.errors import StackError
from pipeline.settings import Settings, StackSettings
from pipeline.stack import common
from pipeline.stack.base import Service
from pipeline.stack.kafka import DEPENDENCY_PLUGIN, MVN, java_binary

log = logging.getLogger(__name__)

CLUSTER_NAME = "auditstream-local"
ARTIFACT = "org.opensearch.distribution.integ-test-zip:opensearch:{version}:zip"
LAUNCHER_GRACE_S = 10.0


def render_opensearch_yml(stack: StackSettings, data_dir: Path, logs_dir: Path) -> str:
    """opensearch.yml for a single loopback node with the disk watermarks off."""
    settings = {
        "cluster.name": CLUSTER_NAME,
        "node.name": CLUSTER_NAME,
        "discovery.type": "single-node",
        "network.host": common.HOST,
        "http.port": stack.opensearch_port,
        "transport.port": stack.opensearch_transport_port,
        "path.data": str(data_dir),
        "path.logs": str(logs_dir),
        "cluster.routing.allocation.disk.threshold_enabled": "false",
    }
    lines = ["# Written by `auditstream stack up`; edits are overwritten."]
    lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def rewrite_jvm_options(text: str, logs_dir: Path, data_dir: Path) -> str:
    """Make the dist's relative ``logs/`` and ``data`` paths absolute (its cwd is read-only)."""
    text = re.sub(r"([=:])logs/", lambda m: f"{m.group(1)}{logs_dir}/", text)
    return re.sub(r"-XX:HeapDumpPath=data\b", f"-XX:HeapDumpPath={data_dir}", text)


def unzip_with_modes(archive: Path, dest: Path) -> None:
    """Extract a zip keeping the Unix permission bits (zipfile alone drops them)."""
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(root):
                raise StackError(f"{archive} has an entry outside its root: {info.filename}")
            zf.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)


def enterable_by(path: Path, uid: int, gids: set[int]) -> Path | None:
    """The first directory on ``path``'s way from / that ``uid`` cannot enter, or None."""
    for part in [*reversed(path.parents), path]:
        try:
            st = part.stat()
        except OSError:
            return None
        if uid == 0 or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_uid == uid and st.st_mode & stat.S_IXUSR:
            continue
        if st.st_gid in gids and st.st_mode & stat.S_IXGRP:
            continue
        return part
    return None


class OpenSearchService(Service):
    name = "opensearch"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.home = self.cache_dir / "opensearch" / self.stack.opensearch_version
        self.base = self.state_dir / "opensearch"
        self.conf_dir = self.base / "config"
        self.data_dir = self.base / "data"
        self.tmp_dir = self.base / "tmp"
        self.server_logs = self.logs_dir / "opensearch"
        self._launcher_exited_at: float | None = None

    @property
    def pid_file(self) -> Path:
        return self.base / "opensearch.pid"

    @property
    def log_file(self) -> Path:
        return self.server_logs / f"{CLUSTER_NAME}.log"

    def launch_log(self) -> Path:
        return self.logs_dir / "opensearch-launcher.log"

    def log_files(self) -> list[Path]:
        return [self.launch_log(), self.log_file]

    def port_settings(self) -> list[tuple[str, int]]:
        return [
            ("opensearch_port", self.stack.opensearch_port),
            ("opensearch_transport_port", self.stack.opensearch_transport_port),
        ]

    def markers(self) -> list[str]:
        return ["org.opensearch.bootstrap.OpenSearch", f"-Dopensearch.path.conf={self.conf_dir}"]

    def run_as(self) -> str | None:
        """The user OpenSearch runs as when we are root, else None (the current user)."""
        return self.stack.opensearch_user if os.geteuid() == 0 else None

    def install(self) -> None:
        version = self.stack.opensearch_version
        with common.file_lock(common.lock_path(self.home)):
            if (self.home / "bin" / "opensearch").is_file():
                return
            log.info("fetching OpenSearch %s with Maven", version)
            common.make_dirs(self.cache_dir, self.home.parent)
            staging = self.home.parent / f"{version}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            common.run_tool(
                [
                    *MVN, f"{DEPENDENCY_PLUGIN}:copy",
                    f"-Dartifact={ARTIFACT.format(version=version)}",
                    f"-DoutputDirectory={staging}",
                ],
                f"fetching OpenSearch {version} with Maven",
                cwd=staging,
            )  # fmt: skip
            archive = staging / f"opensearch-{version}.zip"
            unzip_with_modes(archive, staging)
            archive.unlink()
            (staging / f"opensearch-{version}").rename(self.home)
            shutil.rmtree(staging, ignore_errors=True)

    def _ensure_user(self, user: str) -> pwd.struct_passwd:
        with common.file_lock(self.cache_dir / "useradd.lock"):
            try:
                return pwd.getpwnam(user)
            except KeyError:
                pass
            log.info("creating system user %s to run OpenSearch", user)
            common.run_tool(
                ["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", user],
                f"creating the system user {user} (OpenSearch refuses to run as root)",
            )
            return pwd.getpwnam(user)

    def prepare(self) -> None:
        java_binary(self.stack)
        common.make_dirs(self.state_dir, self.logs_dir, self.run_dir)
        common.make_dirs(self.base, self.data_dir, self.tmp_dir, self.server_logs)
        if not (self.conf_dir / "jvm.options").exists():
            shutil.rmtree(self.conf_dir, ignore_errors=True)
            shutil.copytree(self.home / "config", self.conf_dir)
        common.write_if_changed(
            self.conf_dir / "opensearch.yml",
            render_opensearch_yml(self.stack, self.data_dir, self.server_logs),
        )
        dist_options = (self.home / "config" / "jvm.options").read_text()
        common.write_if_changed(
            self.conf_dir / "jvm.options",
            rewrite_jvm_options(dist_options, self.server_logs, self.data_dir),
        )
        user = self.run_as()
        if user is None:
            return
        account = self._ensure_user(user)
        gids = {account.pw_gid, *os.getgrouplist(user, account.pw_gid)}
        for needed in (self.home / "bin", self.base, self.server_logs):
            closed = enterable_by(needed, account.pw_uid, gids)
            if closed is not None:
                raise StackError(
                    f"OpenSearch runs as {user}, who cannot enter {closed}; keep "
                    "AUDITSTREAM_STACK__CACHE_DIR and AUDITSTREAM_STACK__STATE_DIR outside "
                    f"private directories such as /root, or `chmod o+x {closed}`"
                )
        for path in (self.base, self.data_dir, self.tmp_dir, self.server_logs):
            os.chown(path, account.pw_uid, account.pw_gid)
        for dirpath, dirnames, filenames in os.walk(self.conf_dir):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.chown(name, account.pw_uid, account.pw_gid)

    def command(self) -> list[str]:
        heap = self.stack.opensearch_heap
        argv = [
            "env",
            f"OPENSEARCH_JAVA_HOME={self.stack.java_home}",
            f"OPENSEARCH_JAVA_OPTS=-Xms{heap} -Xmx{heap}",
            f"OPENSEARCH_PATH_CONF={self.conf_dir}",
            f"OPENSEARCH_TMPDIR={self.tmp_dir}",
            str(self.home / "bin" / "opensearch"),
            "-d",
            "-p",
            str(self.pid_file),
        ]
        user = self.run_as()
        return argv if user is None else ["runuser", "-u", user, "--", *argv]

    def working_dir(self) -> Path:
        return self.home

    def write_pid_file(self, pid: int) -> None:
        """OpenSearch writes its own pid file (``-p``) once it has daemonized."""

    def launch(self) -> None:
        self._launcher_exited_at = None
        super().launch()

    def alive(self) -> bool:
        """The launcher exits once the daemon is forked; allow a moment to find it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return True
        if self.pid() is not None:
            return True
        if proc is None or proc.returncode != 0:
            return False
        if self._launcher_exited_at is None:
            self._launcher_exited_at = time.monotonic()
        return time.monotonic() - self._launcher_exited_at < LAUNCHER_GRACE_S

    def address(self) -> str:
        return f"http://{common.HOST}:{self.port}"

    def data_path(self) -> Path:
        return self.data_dir

    def configured_version(self) -> str:
        return self.stack.opensearch_version

    def running_version(self, pid: int) -> str | None:
        """``version.number`` of ``GET /``."""
        with urllib.request.urlopen(f"{self.address()}/", timeout=3) as resp:
            body = json.loads(resp.read())
        number = body.get("version", {}).get("number") if isinstance(body, dict) else None
        return str(number) if number else None

    def healthy(self) -> bool:
        url = f"http://{common.HOST}:{self.port}/_cluster/health?wait_for_status=yellow&timeout=1s"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return body.get("status") in ("green", "yellow")
