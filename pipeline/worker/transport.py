"""Faust's Kafka transport, consuming with ``isolation.level=read_committed``.

Faust reads committed-only data only under its exactly-once processing
guarantee, which DESIGN rules out. A producer's aborted transaction
must never become an enriched event with no raw record behind it, so the
worker's consumer is made read_committed here, under its own URL scheme.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver

SCHEME = "auditstream-kafka"


class _ConsumerThread(driver.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by the fetcher that AIOKafkaConsumer.start() builds.
        consumer._isolation_level = "read_committed"
        return consumer


class _Consumer(driver.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):  # type: ignore[misc]
    Consumer = _Consumer


def broker_urls(bootstrap_servers: str) -> list[str]:
    """Faust broker URLs for this transport; registers it on first use."""
    TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")
    return [f"{SCHEME}://{host.strip()}" for host in bootstrap_servers.split(",")]
