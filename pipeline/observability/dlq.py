"""``auditstream dlq list|show|redrive``: dead letters an operator can act on.

Dead letters are read from the dead-letter topic (``topics.dead_letter``) from its
earliest retained record; a dead letter is named by its position there,
``PARTITION:OFFSET``.

- ``list`` shows them by reason and time (``--reason``, ``--since``, ``--until``);
- ``show P:O`` shows one, with its original bytes decoded where possible (as an
  access event, else as text, else as a hex dump);
- ``redrive`` sends chosen ones back to the input topic, with their original key,
  value and headers plus an ``auditstream.redriven-from`` header. A redriven
  message is a new input with a new offset; the dead letter itself stays in the
  topic and in the archive. By default only those that now pass decoding and
  validation are sent (the fix is in place); ``--force`` sends all chosen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from pipeline.codec import Decoder, RegistryLookup
from pipeline.errors import ConfigError, DeliveryError, RecordError, TransportError
from pipeline.events import event_to_json, parse_time
from pipeline.producer.sdk import producer_config
from pipeline.schemas import ACCESS_EVENT, DEAD_LETTER, SchemaStore, default_store
from pipeline.settings import Settings
from pipeline.stages.validate import validate

REDRIVEN_FROM = "auditstream.redriven-from"
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, decoded."""

    partition: int
    offset: int
    letter: dict[str, Any]

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return str(self.letter["reason"])

    @property
    def at(self) -> datetime:
        value: datetime = self.letter["dead_lettered_at"]
        return value

    @property
    def source(self) -> str:
        letter = self.letter
        return f"{letter['source_topic']}/{letter['source_partition']}@{letter['source_offset']}"


def parse_position(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ConfigError(f"{text!r} is not a dead letter position PARTITION:OFFSET, e.g. 3:1742")
    return int(partition), int(offset)


class DeadLetterReader:
    """Reads the dead-letter topic up to its end at the time of the call."""

    def __init__(self, settings: Settings, store: SchemaStore | None = None) -> None:
        self._settings = settings
        self._topic = settings.topics.dead_letter
        self._decoder = Decoder(
            store or default_store(), (store or default_store()).latest(DEAD_LETTER)
        )
        self.undecodable = 0

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self._settings.kafka.client_config(),
                "group.id": f"auditstream-dlq-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )

    def read(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        positions: set[tuple[int, int]] | None = None,
    ) -> Iterator[DeadLetter]:
        """Every dead letter in order per partition, filtered by time and position."""
        consumer = self._consumer()
        try:
            meta = consumer.list_topics(self._topic, timeout=TIMEOUT_S).topics.get(self._topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise ConfigError(
                    f"dead-letter topic {self._topic} does not exist on Kafka at "
                    f"{self._settings.kafka.bootstrap_servers}; run `auditstream topics`"
                )
            ends: dict[int, int] = {}
            starts: list[TopicPartition] = []
            wanted_partitions = {p for p, _ in positions} if positions is not None else None
            for partition in sorted(meta.partitions):
                if wanted_partitions is not None and partition not in wanted_partitions:
                    continue
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self._topic, partition), timeout=TIMEOUT_S
                )
                if high <= low:
                    continue
                ends[partition] = high
                start = low
                if positions is not None:
                    start = max(low, min(o for p, o in positions if p == partition))
                starts.append(TopicPartition(self._topic, partition, start))
            if since is not None and starts:
                stamped = [
                    TopicPartition(tp.topic, tp.partition, int(since.timestamp() * 1000))
                    for tp in starts
                ]
                found = consumer.offsets_for_times(stamped, timeout=TIMEOUT_S)
                starts = [
                    TopicPartition(tp.topic, tp.partition, max(tp.offset, f.offset))
                    for tp, f in zip(starts, found, strict=True)
                    if f.offset >= 0
                ]
            if not starts:
                return
            consumer.assign(starts)
            remaining = {tp.partition for tp in starts}
            deadline = time.monotonic() + TIMEOUT_S
            while remaining:
                batch = consumer.consume(500, 1.0)
                if not batch and time.monotonic() > deadline:
                    raise TransportError(
                        f"reading {self._topic} stalled; is Kafka at "
                        f"{self._settings.kafka.bootstrap_servers} up?"
                    )
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            remaining.discard(msg.partition() or 0)
                            continue
                        raise TransportError(f"reading {self._topic}: {err.str()}")
                    deadline = time.monotonic() + TIMEOUT_S
                    partition, offset = msg.partition(), msg.offset()
                    assert partition is not None and offset is not None
                    if offset >= ends[partition] - 1:
                        remaining.discard(partition)
                        consumer.incremental_unassign([TopicPartition(self._topic, partition)])
                    if offset >= ends[partition]:
                        continue
                    if positions is not None and (partition, offset) not in positions:
                        continue
                    try:
                        letter = self._decoder.decode(msg.value()).record
                    except RecordError:
                        self.undecodable += 1
                        continue
                    dead = DeadLetter(partition, offset, letter)
                    if since is not None and dead.at < since:
                        continue
                    if until is not None and dead.at >= until:
                        continue
                    yield dead
        finally:
            consumer.close()


# -- show ----------------------------------------------------------------------------------


def describe_original(value: bytes | None, settings: Settings, store: SchemaStore) -> list[str]:
    """The original bytes, decoded where possible: an access event, text, or a hex dump."""
    if value is None:
        return ["original value: (none: a null value)"]
    url = settings.codec.schema_registry_url
    decoder = Decoder(
        store,
        store.latest(ACCESS_EVENT),
        RegistryLookup(url, settings.codec.registry_retry_s) if url else None,
    )
    try:
        decoded = decoder.decode(value)
    except RecordError as exc:
        pass_note = f"does not decode as an access event ({exc})"
    else:
        event = json.dumps(event_to_json(decoded.record), indent=2, sort_keys=True, default=str)
        return [
            f"original value: {len(value)} bytes, an access event ({decoded.encoding.value}, "
            f"written with {decoded.writer.label}):",
            *event.splitlines(),
        ]
    lines = [f"original value: {len(value)} bytes, {pass_note}"]
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        lines.append("as UTF-8 text:")
        lines += text.splitlines() or [""]
        return lines
    lines.append("hex dump:")
    for start in range(0, min(len(value), 1024), 16):
        chunk = value[start : start + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"  {start:08x}  {chunk.hex(' '):<47}  {ascii_}")
    if len(value) > 1024:
        lines.append(f"  … {len(value) - 1024} more bytes")
    return lines


def show_lines(dead: DeadLetter, settings: Settings, store: SchemaStore) -> list[str]:
    letter = dead.letter
    received = letter.get("source_timestamp")
    lines = [
        f"dead letter {settings.topics.dead_letter} {dead.position}",
        f"reason:            {dead.reason}",
        f"detail:            {letter['detail']}",
        f"event_id:          {letter.get('event_id') or '-'}",
        f"source:            {dead.source}",
        f"received at:       {_iso(received) if received else '-'}",
        f"dead-lettered at:  {_iso(dead.at)}",
        f"original key:      {_bytes_text(letter.get('original_key'))}",
    ]
    headers = letter.get("original_headers") or []
    lines.append(f"original headers:  {len(headers)}")
    lines += [f"  {h['key']}: {_bytes_text(h.get('value'))}" for h in headers]
    return lines + describe_original(letter.get("original_value"), settings, store)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bytes_text(value: bytes | None) -> str:
    if value is None:
        return "(none)"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return f"0x{value.hex()}"
    return repr(text) if text.isprintable() else f"0x{value.hex()}"


# -- redrive -------------------------------------------------------------------------------


def still_fails(dead: DeadLetter, settings: Settings, store: SchemaStore) -> str | None:
    """Why this dead letter would be dead-lettered again now; None when it passes."""
    url = settings.codec.schema_registry_url
    decoder = Decoder(
        store,
        store.latest(ACCESS_EVENT),
        RegistryLookup(url, settings.codec.registry_retry_s) if url else None,
    )
    try:
        decoded = decoder.decode(dead.letter.get("original_value"))
        validate(
            decoded.record,
            record_timestamp_ms=int(time.time() * 1000),
            max_future_skew_s=settings.worker.max_future_skew_s,
        )
    except RecordError as exc:
        return f"{exc.reason}: {exc}"
    return None


def redrive(settings: Settings, letters: list[DeadLetter]) -> int:
    """Produce each dead letter's original record to the input topic; returns how many."""
    producer = Producer(producer_config(settings))
    failures: list[str] = []

    def delivered(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    for dead in letters:
        letter = dead.letter
        headers = [(h["key"], h.get("value")) for h in letter.get("original_headers") or []]
        headers.append(
            (
                REDRIVEN_FROM,
                f"{settings.topics.dead_letter}/{dead.partition}@{dead.offset}".encode(),
            )
        )
        producer.produce(
            settings.topics.input,
            key=letter.get("original_key"),
            value=letter.get("original_value"),
            headers=headers,
            on_delivery=delivered,
        )
        producer.poll(0)
    left = producer.flush(TIMEOUT_S * 2)
    if left or failures:
        raise DeliveryError(
            f"{left + len(failures)} of {len(letters)} redriven records were not delivered to "
            f"{settings.topics.input}: {'; '.join(failures[:3]) or 'timed out'}; running the "
            "same redrive again is safe (a repeat is deduplicated by event_id)"
        )
    return len(letters)


# -- command line --------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="list, show and redrive dead letters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)

    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument(
        "--reason", action="append", help="only this reason code (repeat for several)"
    )
    filters.add_argument("--since", help="dead-lettered at or after (ISO 8601)")
    filters.add_argument("--until", help="dead-lettered before (ISO 8601)")

    list_parser = which.add_parser(
        "list", parents=[filters], help="dead letters by reason and time"
    )
    list_parser.add_argument("--limit", type=int, default=100, help="show at most N (default 100)")
    list_parser.add_argument("--json", action="store_true", help="one JSON object per line")
    list_parser.set_defaults(func=run_list)

    show = which.add_parser("show", help="one dead letter, its original bytes decoded")
    show.add_argument("position", help="PARTITION:OFFSET in the dead-letter topic")
    show.set_defaults(func=run_show)

    again = which.add_parser(
        "redrive",
        parents=[filters],
        help="send chosen dead letters back to the input topic as new inputs",
    )
    again.add_argument("positions", nargs="*", help="PARTITION:OFFSET of each to redrive")
    again.add_argument(
        "--all", action="store_true", help="every dead letter the filters select (none given: all)"
    )
    again.add_argument(
        "--force", action="store_true", help="also send those that would fail validation again"
    )
    again.epilog = "Exit status 3 when some chosen dead letters were skipped (still invalid)."
    again.add_argument(
        "--dry-run", action="store_true", help="say what would be sent; send nothing"
    )
    again.set_defaults(func=run_redrive)


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "since": parse_time(args.since, "--since") if args.since else None,
        "until": parse_time(args.until, "--until") if args.until else None,
    }


def _chosen(letters: Iterator[DeadLetter], reasons: list[str] | None) -> Iterator[DeadLetter]:
    return (d for d in letters if not reasons or d.reason in reasons)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    reader = DeadLetterReader(settings)
    counts: Counter[str] = Counter()
    shown = 0
    if not args.json:
        print(
            f"{'position':<12} {'dead-lettered at (UTC)':<24} {'reason':<22} {'event_id':<36} "
            f"{'source':<28} detail"
        )
    for dead in _chosen(reader.read(**_filters(args)), args.reason):
        counts[dead.reason] += 1
        if shown >= args.limit:
            continue
        shown += 1
        if args.json:
            print(
                json.dumps(
                    {
                        "position": dead.position,
                        "dead_lettered_at": _iso(dead.at),
                        "reason": dead.reason,
                        "event_id": dead.letter.get("event_id"),
                        "source": dead.source,
                        "detail": dead.letter["detail"],
                    }
                )
            )
        else:
            print(
                f"{dead.position:<12} {_iso(dead.at):<24} {dead.reason:<22} "
                f"{dead.letter.get('event_id') or '-':<36} {dead.source:<28} "
                f"{str(dead.letter['detail'])[:80]}"
            )
    total = sum(counts.values())
    by_reason = ", ".join(f"{reason} {n}" for reason, n in counts.most_common()) or "none"
    more = f" (first {shown} shown; --limit)" if shown < total else ""
    print(
        f"{total} dead letters in {settings.topics.dead_letter}: {by_reason}{more}", file=sys.stderr
    )
    if reader.undecodable:
        print(
            f"{reader.undecodable} records of the topic are not dead letters this version can read",
            file=sys.stderr,
        )
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    position = parse_position(args.position)
    reader = DeadLetterReader(settings)
    found = list(reader.read(positions={position}))
    if not found:
        print(
            f"no dead letter at {settings.topics.dead_letter} {args.position} (see `auditstream "
            "dlq list`)",
            file=sys.stderr,
        )
        return 1
    store = default_store()
    print("\n".join(show_lines(found[0], settings, store)))
    return 0


def run_redrive(args: argparse.Namespace, settings: Settings) -> int:
    positions = {parse_position(p) for p in args.positions} if args.positions else None
    if positions is None and not (args.all or args.reason or args.since or args.until):
        raise ConfigError(
            "say which dead letters to redrive: PARTITION:OFFSET positions, filters "
            "(--reason, --since, --until) or --all"
        )
    reader = DeadLetterReader(settings)
    chosen = list(_chosen(reader.read(positions=positions, **_filters(args)), args.reason))
    if positions is not None:
        missing = positions - {(d.partition, d.offset) for d in chosen}
        if missing:
            names = ", ".join(f"{p}:{o}" for p, o in sorted(missing))
            raise ConfigError(f"no dead letter (matching the filters) at {names}")
    store = default_store()
    send: list[DeadLetter] = []
    for dead in chosen:
        problem = None if args.force else still_fails(dead, settings, store)
        if problem is None:
            send.append(dead)
        else:
            print(
                f"{dead.position}: skipped, would be dead-lettered again ({problem}); "
                "--force sends it anyway",
                file=sys.stderr,
            )
    if args.dry_run:
        for dead in send:
            print(
                f"{dead.position}: would send {dead.source} ({dead.reason}) to "
                f"{settings.topics.input}"
            )
        print(f"dry run: {len(send)} of {len(chosen)} chosen would be sent", file=sys.stderr)
        return 0
    sent = redrive(settings, send)
    print(
        f"redrove {sent} of {len(chosen)} chosen dead letters to {settings.topics.input} "
        f"(header {REDRIVEN_FROM}); the dead letters stay in {settings.topics.dead_letter} "
        "and the archive",
        file=sys.stderr,
    )
    return 0 if sent == len(chosen) else 3
