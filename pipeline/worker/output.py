"""Outputs of the worker, written through an idempotent confluent-kafka producer.

``produce`` never blocks the event loop: delivery reports arrive on a
background thread, and when every output of one input record is durable the
record's ``on_done`` callback runs. A failed delivery is fatal: the process
ends at once with a non-zero status, before anything later is acknowledged
(DESIGN, Accounting: the worker).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from pipeline.settings import Settings
from pipeline.worker.processor import Output

log = logging.getLogger(__name__)

EXIT_DELIVERY_FAILED = 70


def fatal(message: str, status: int = EXIT_DELIVERY_FAILED) -> None:
    """Stop the process now: no graceful stop, which would commit what it holds."""
    log.critical("%s; exiting with status %d", message, status)
    logging.shutdown()
    os._exit(status)


def output_producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **settings.kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        # A broker outage stalls the worker; it never drops an output.
        "message.timeout.ms": 0,
        "linger.ms": 5,
        "compression.type": "lz4",
        "partitioner": "murmur2_random",
    }


class OutputWriter:
    """Produces outputs and reports when all outputs of one input are delivered."""

    def __init__(self, settings: Settings, on_fatal: Callable[[str], None] = fatal) -> None:
        self._producer = Producer(output_producer_config(settings))
        self._on_fatal = on_fatal
        self._partitions: dict[str, int] = {}
        self._changelogs: set[str] = set()
        self._running = True
        self._thread = threading.Thread(target=self._poll, name="output-poll", daemon=True)
        self._thread.start()

    def partitions(self, topic: str) -> int:
        if topic not in self._partitions:
            meta = self._producer.list_topics(topic, timeout=30)
            info = meta.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                self._on_fatal(f"output topic {topic} does not exist; run `auditstream topics`")
                return 1
            self._partitions[topic] = len(info.partitions)
        return self._partitions[topic]

    def write(
        self,
        outputs: list[Output],
        partition: int,
        on_done: Callable[[], None],
        on_changelog: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """Queue ``outputs`` on the input's partition number; call ``on_done`` once all land.

        ``on_changelog(topic, partition, offset)`` hears of each delivered changelog record.
        """
        if not outputs:
            on_done()
            return
        remaining = [len(outputs)]
        lock = threading.Lock()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self._on_fatal(f"output to {msg.topic()} was not delivered: {err}")
                return
            if on_changelog is not None and msg.topic() in self._changelogs:
                on_changelog(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                on_done()

        for out in outputs:
            if out.changelog:
                self._changelogs.add(out.topic)
            # Same partition number as the input keeps one actor's order end to end;
            # records keyed by something else (source address, alert id) go by key.
            # (-1 is librdkafka's "unassigned": the partitioner picks one from the key.)
            where = -1 if out.by_key else partition % self.partitions(out.topic)
            while True:
                try:
                    self._producer.produce(
                        out.topic,
                        value=out.value,
                        key=out.key,
                        headers=out.headers or None,
                        partition=where,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)

    def _poll(self) -> None:
        while self._running:
            self._producer.poll(0.1)

    def close(self, timeout: float = 30.0) -> int:
        remaining: int = self._producer.flush(timeout)
        self._running = False
        return remaining
