"""Integration fixtures: one real local stack for the whole session, on free ports.

The stack's state lives in a fresh directory under /var/tmp (pytest's own tmp
dirs are mode 700, which the OpenSearch user cannot enter); downloads come from
the normal cache. A service that cannot start fails the tests, never skips them.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.settings import (
    ArchiveSettings,
    KafkaSettings,
    OpenSearchSettings,
    Settings,
    WorkerSettings,
    load_settings,
)
from pipeline.stack import LocalStack
from pipeline.stack.common import HOST, free_ports
from pipeline.stack.reaper import spawn as spawn_reaper
from pipeline.topics import ensure_group_offsets, ensure_topics, with_suffix

log = logging.getLogger(__name__)

STATE_PARENT = Path("/var/tmp")
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


def make_stack_settings(state_dir: Path) -> Settings:
    """Settings for a stack in ``state_dir`` on free ports, clients pointed at it."""
    kafka, controller, http, transport, s3 = free_ports(5)
    base = load_settings()
    stack = base.stack.model_copy(
        update={
            "state_dir": state_dir,
            "kafka_port": kafka,
            "kafka_controller_port": controller,
            "opensearch_port": http,
            "opensearch_transport_port": transport,
            "s3_port": s3,
        }
    )
    return Settings(
        stack=stack,
        kafka=KafkaSettings(bootstrap_servers=f"{HOST}:{kafka}"),
        opensearch=OpenSearchSettings(url=f"http://{HOST}:{http}"),
        archive=ArchiveSettings(
            backend="filesystem",
            path=state_dir / "archive",
            s3_endpoint=f"http://{HOST}:{s3}",
            s3_access_key=SecretStr(stack.s3_access_key),
            s3_secret_key=stack.s3_secret_key,
        ),
        worker=WorkerSettings(data_dir=state_dir / "worker"),
    )


def unique_settings(base: Settings, suffix: str) -> Settings:
    """``base`` with topics and groups suffixed, created on the broker and set to earliest."""
    settings = with_suffix(base, suffix)
    ensure_topics(settings)
    ensure_group_offsets(settings)
    return settings


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """The session's running stack (tests may kill and restart single services)."""
    state_dir = Path(tempfile.mkdtemp(prefix="auditstream-it-", dir=STATE_PARENT))
    state_dir.chmod(0o755)
    reaper = spawn_reaper(state_dir, remove=True)  # cleans up even if pytest is killed
    stack = LocalStack(make_stack_settings(state_dir), progress=log.info)
    try:
        stack.up()
        yield stack
    finally:
        try:
            stack.down()
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
            reaper.kill()
            reaper.wait()


@pytest.fixture(scope="session")
def stack_settings(local_stack: LocalStack) -> Settings:
    """Settings pointing at the session's stack, with the default topic and group names."""
    return local_stack.settings


@pytest.fixture
def pipeline_settings(
    stack_settings: Settings, request: pytest.FixtureRequest, tmp_path: Path
) -> Settings:
    """Per-test settings: own topics and groups on the shared broker, own data dirs."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    settings = unique_settings(stack_settings, f"{name}-{uuid.uuid4().hex[:6]}")
    return settings.model_copy(
        update={
            "worker": settings.worker.model_copy(update={"data_dir": tmp_path / "worker"}),
            "archive": settings.archive.model_copy(update={"path": tmp_path / "archive"}),
        }
    )
