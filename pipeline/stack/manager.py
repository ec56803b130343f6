"""``LocalStack``: Kafka, OpenSearch and the S3 store as local processes, up and down together."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from pydantic import SecretStr

from pipeline.errors import StackError
from pipeline.settings import Settings
from pipeline.stack import common
from pipeline.stack.base import Service, ServiceStatus, absolute
from pipeline.stack.kafka import KafkaService
from pipeline.stack.objectstore import ObjectStoreService
from pipeline.stack.opensearch import OpenSearchService

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def local_client_settings(settings: Settings) -> Settings:
    """``settings`` with Kafka, OpenSearch and the S3 endpoint pointing at the local stack."""
    stack = settings.stack
    host = common.HOST
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={
                    "bootstrap_servers": f"{host}:{stack.kafka_port}",
                    "security_protocol": "PLAINTEXT",
                    "sasl_mechanism": None,
                }
            ),
            "opensearch": settings.opensearch.model_copy(
                update={"url": f"http://{host}:{stack.opensearch_port}"}
            ),
            "archive": settings.archive.model_copy(
                update={
                    "s3_endpoint": f"http://{host}:{stack.s3_port}",
                    "s3_access_key": SecretStr(stack.s3_access_key),
                    "s3_secret_key": stack.s3_secret_key,
                }
            ),
        }
    )


class LocalStack:
    """The local services of one state directory; every method is idempotent."""

    def __init__(self, settings: Settings, progress: Progress | None = None) -> None:
        self.settings = settings
        self.state_dir = absolute(settings.stack.state_dir)
        self.progress: Progress = progress or log.info
        self.kafka = KafkaService(settings)
        self.opensearch = OpenSearchService(settings)
        self.s3 = ObjectStoreService(settings)
        self.services: dict[str, Service] = {
            s.name: s for s in (self.kafka, self.opensearch, self.s3)
        }

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise StackError(
                f"no service {name!r}; the stack has {', '.join(self.services)}"
            ) from None

    def _lock(self) -> AbstractContextManager[None]:
        return common.file_lock(self.state_dir / ".stack.lock")

    def up(self, *, topics: bool = True) -> list[str]:
        """Start what is not running, wait until all are healthy; the names started."""
        with self._lock():
            pending = [s for s in self.services.values() if s.pid() is None]
            for service in self.services.values():
                if service not in pending:
                    self.progress(f"{service.name} already running (pid {service.pid()})")
            for service in pending:
                service.check_ports()
            for service in pending:
                service.install()
            try:
                self._launch_and_wait(pending)
            except BaseException:
                for service in pending:
                    service.stop(grace_s=10)
                raise
        if topics:
            self.ensure_topics()
        return [s.name for s in pending]

    def _launch_and_wait(self, pending: list[Service]) -> None:
        for service in pending:
            service.prepare()
            service.launch()
            self.progress(f"{service.name} starting (log {service.log_file})")
        deadline = time.monotonic() + self.settings.stack.start_timeout_s
        for service in self.services.values():
            service.wait_ready(deadline)
            service.after_start()
            self.progress(f"{service.name} healthy on {common.HOST}:{service.port}")

    def ensure_topics(self) -> None:
        """Create the pipeline's topics and group offsets on the local broker."""
        from pipeline.topics import ensure_group_offsets, ensure_topics

        client = local_client_settings(self.settings)
        for line in ensure_topics(client).lines():
            self.progress(line)
        for line in ensure_group_offsets(client).lines():
            self.progress(line)

    def down(self) -> list[str]:
        """Stop every service (reverse order); the names that were running."""
        stopped: list[str] = []
        if not self.state_dir.is_dir():
            return stopped
        with self._lock():
            for service in reversed(list(self.services.values())):
                if service.stop():
                    self.progress(f"{service.name} stopped")
                    stopped.append(service.name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        return [s.status() for s in self.services.values()]

    def start_service(self, name: str) -> bool:
        """Start one service (tests restart what they killed); True if launched."""
        return self.service(name).start()

    def stop_service(self, name: str) -> bool:
        return self.service(name).stop()

    def kill_service(self, name: str) -> bool:
        """SIGKILL one service, as a crash would."""
        return self.service(name).kill()

    def where(self) -> list[str]:
        """Where the logs and data of each service live."""
        return [
            f"logs: {self.state_dir / 'logs'}",
            f"  kafka       {self.kafka.log_file}",
            f"  opensearch  {self.opensearch.log_file} (launcher: {self.opensearch.launch_log()})",
            f"  s3          {self.s3.log_file}",
            f"data: kafka {self.kafka.data_dir}, opensearch {self.opensearch.data_dir}, "
            f"s3 {self.s3.data_dir}",
            f"downloads: {absolute(self.settings.stack.cache_dir)}",
        ]
