"""A bare Faust forwarder: the baseline ``auditstream bench`` compares the worker with.

One agent reads raw bytes from one topic and awaits ``topic.send`` of each
value to another: no decoding, no validation, no state. Its own consumer
group, no leader topic, earliest offsets. Run as a process::

    python -m pipeline.bench.forwarder --bootstrap 127.0.0.1:9092 --group g \\
        --source in-topic --sink out-topic --datadir /tmp/x
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import faust


def create_app(bootstrap: str, group: str, source: str, sink: str, datadir: str) -> faust.App:
    """The forwarder app; both topics must exist before it starts."""
    app = faust.App(
        group,
        broker=[f"kafka://{host.strip()}" for host in bootstrap.split(",")],
        store="memory://",
        datadir=datadir,
        autodiscover=False,
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
    )
    source_topic = app.topic(source, key_serializer="raw", value_serializer="raw")
    sink_topic = app.topic(sink, key_serializer="raw", value_serializer="raw")

    @app.agent(source_topic, name="forward")
    async def forward(stream: Any) -> None:
        async for event in stream.events():
            await sink_topic.send(key=event.key, value=event.value)

    return app


def main(argv: Sequence[str] | None = None) -> int:
    from faust.worker import Worker

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.forwarder", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--loglevel", default="warning")
    args = parser.parse_args(argv)
    app = create_app(args.bootstrap, args.group, args.source, args.sink, args.datadir)
    Worker(app, loglevel=args.loglevel).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
