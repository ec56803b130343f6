"""``auditstream bench``: how fast the pipeline is, beside what its parts allow.

One run on the local stack, in its own namespace (topics, groups, index
prefixes with a random ``bench-…`` suffix; archive and worker state in a
temporary directory), removed again at the end; the stack keeps running.

1. Baseline A: the N ECS documents bulk-indexed straight into OpenSearch.
2. Baseline B: the N encoded records forwarded by a bare Faust agent.
3. The pipeline end to end: N records in the input topic, then the worker and
   both sinks started; until OpenSearch counts N and the archive holds N.
4. Latency: a steady rate for some seconds; every 10th event's produce →
   searchable time, polled with ``ids`` queries (refresh not forced).
5. The worker alone over the same N, without and with detection
   (:mod:`pipeline.bench.worker_alone`): what detecting costs per event.

Throughputs are given steady (from the first output seen to the Nth) and in
total (including start-up), with the pipeline's ratio to each baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.bench.common import say
from pipeline.errors import AuditstreamError, ConfigError, ServiceUnavailable, StackError
from pipeline.settings import Settings, to_env

if TYPE_CHECKING:
    from pipeline.bench.worker_alone import WorkerAlone

SAMPLE_EVERY = 10
POLL_S = 0.25
LATENCY_POLL_S = 0.1
IDS_BATCH = 1000
BULK_CHUNK = 2000
VERSIONED = ("faust-streaming", "aiokafka", "confluent-kafka", "opensearch-py", "fastavro")


# -- results (pure) -------------------------------------------------------------------------------


def per_second(events: int, seconds: float) -> float | None:
    return events / seconds if events > 0 and seconds > 0 else None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100), linear between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Throughput:
    """N events through one path: steady (first output seen to the Nth) and in total."""

    events: int
    steady_events: int  # outputs after the first observation
    steady_s: float
    total_s: float  # from the start of the process(es), start-up included

    @property
    def steady_rate(self) -> float | None:
        return per_second(self.steady_events, self.steady_s)

    @property
    def total_rate(self) -> float | None:
        return per_second(self.events, self.total_s)


@dataclass
class Watch:
    """Follows an output count towards ``target``, from a start time (monotonic seconds)."""

    target: int
    started: float
    first: tuple[float, int] | None = None
    done_at: float | None = None
    last: int = 0

    def observe(self, now: float, count: int) -> bool:
        self.last = count
        if count > 0 and self.first is None:
            self.first = (now, count)
        if count >= self.target and self.done_at is None:
            self.done_at = now
        return self.done_at is not None

    def result(self) -> Throughput:
        if self.first is None or self.done_at is None:
            raise ValueError("the watch has not reached its target")
        first_at, first_count = self.first
        return Throughput(
            events=self.target,
            steady_events=self.target - first_count,
            steady_s=self.done_at - first_at,
            total_s=self.done_at - self.started,
        )


@dataclass(frozen=True)
class Latency:
    rate: float
    seconds: float
    produced: int
    produce_s: float
    latencies_ms: list[float]
    unseen: int

    def summary(self) -> dict[str, float | None]:
        values = self.latencies_ms
        if not values:
            return {"p50": None, "p95": None, "p99": None, "max": None}
        return {
            "p50": percentile(values, 50),
            "p95": percentile(values, 95),
            "p99": percentile(values, 99),
            "max": max(values),
        }


@dataclass(frozen=True)
class BenchReport:
    events: int
    bulk: Throughput
    faust: Throughput
    pipeline: Throughput
    worker: Throughput
    archive_s: float
    produce_s: float
    latency: Latency
    rss_kb: dict[str, int | None]
    load: dict[str, tuple[float, float, float]]
    accounted: dict[str, tuple[int, int]]  # what → (found, expected)
    versions: dict[str, str]
    workers: list[WorkerAlone] = field(default_factory=list)


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _ratio(top: float | None, bottom: float | None) -> str:
    return "n/a" if top is None or not bottom else f"{top / bottom:.2f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _load(value: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in value)


def _throughput_rows(r: BenchReport) -> list[tuple[str, str, str, str]]:
    steady, total = r.pipeline.steady_rate, r.pipeline.total_rate
    return [
        ("A  OpenSearch bulk (helpers.bulk)", _rate(r.bulk.steady_rate),
         f"{r.bulk.steady_s:.2f}", _ratio(steady, r.bulk.steady_rate)),
        ("B  bare Faust agent, forwarding", _rate(r.faust.steady_rate),
         f"{r.faust.steady_s:.2f}", _ratio(steady, r.faust.steady_rate)),
        ("     incl. start-up", _rate(r.faust.total_rate),
         f"{r.faust.total_s:.2f}", _ratio(total, r.faust.total_rate)),
        ("P  pipeline, first doc to Nth", _rate(steady), f"{r.pipeline.steady_s:.2f}", "1.00"),
        ("     incl. start-up", _rate(total), f"{r.pipeline.total_s:.2f}", "1.00"),
        ("     worker alone, first to Nth enriched", _rate(r.worker.steady_rate),
         f"{r.worker.steady_s:.2f}", "-"),
        ("     archive holds N (incl. start-up)", _rate(per_second(r.events, r.archive_s)),
         f"{r.archive_s:.2f}", "-"),
    ]  # fmt: skip


def format_report(r: BenchReport) -> str:
    """The table ``auditstream bench`` prints."""
    lat = r.latency.summary()
    lines = [
        f"auditstream bench: N = {r.events:,} events, {os.cpu_count()} cores, "
        f"load avg (1/5/15 min) {_load(r.load['start'])} at start, {_load(r.load['end'])} at end",
        "",
        f"{'throughput':<40}{'events/s':>10}{'time (s)':>10}{'pipeline / this':>17}",
    ]
    lines += [f"{a:<40}{b:>10}{c:>10}{d:>17}" for a, b, c, d in _throughput_rows(r)]
    lines += [
        f"  (A: the shipped template, chunks of {BULK_CHUNK}; pipeline/this compares steady "
        "with steady, total with total; N produced to the input beforehand in "
        f"{r.produce_s:.2f} s)",
        "",
        f"latency produce → searchable at {r.latency.rate:,.0f}/s for {r.latency.seconds:.0f} s "
        f"({r.latency.produced:,} events in {r.latency.produce_s:.1f} s, every {SAMPLE_EVERY}th "
        f"sampled: {len(r.latency.latencies_ms):,} seen, {r.latency.unseen} unseen)",
        f"  p50 {_ms(lat['p50'])} ms   p95 {_ms(lat['p95'])} ms   p99 {_ms(lat['p99'])} ms   "
        f"max {_ms(lat['max'])} ms",
        "",
        *_worker_rows(r),
        "peak RSS (VmHWM): "
        + ", ".join(
            f"{name} {'n/a' if kb is None else f'{kb / 1024:.0f} MB'}"
            for name, kb in r.rss_kb.items()
        ),
        "accounted: "
        + ", ".join(f"{what} {found:,}/{want:,}" for what, (found, want) in r.accounted.items()),
        "load avg by phase: " + ", ".join(f"{k} {_load(v)}" for k, v in r.load.items()),
        "versions: " + ", ".join(f"{k} {v}" for k, v in r.versions.items()),
    ]
    return "\n".join(lines)


def _worker_rows(r: BenchReport) -> list[str]:
    from pipeline.bench.worker_alone import format_rows

    rows = format_rows(r.workers)
    return [*rows, ""] if rows else []


def report_dict(r: BenchReport) -> dict[str, Any]:
    """Machine-readable results (``--json``)."""

    def rates(t: Throughput) -> dict[str, Any]:
        return {**dataclasses.asdict(t), "steady_rate": t.steady_rate, "total_rate": t.total_rate}

    latency = dataclasses.asdict(r.latency)
    del latency["latencies_ms"]
    return {
        "events": r.events,
        "bulk": rates(r.bulk),
        "faust": rates(r.faust),
        "pipeline": {**rates(r.pipeline), "archive_s": r.archive_s, "produce_s": r.produce_s},
        "worker": rates(r.worker),
        "worker_alone": {
            w.variant: {
                **rates(w.throughput),
                "us_per_event": w.us_per_event,
                "rss_kb": w.peak_rss_kb,
            }
            for w in r.workers
        },
        "ratios": {
            "pipeline_to_bulk": _num(_ratio(r.pipeline.steady_rate, r.bulk.steady_rate)),
            "pipeline_to_faust": _num(_ratio(r.pipeline.steady_rate, r.faust.steady_rate)),
            "pipeline_to_faust_total": _num(_ratio(r.pipeline.total_rate, r.faust.total_rate)),
        },
        "latency_ms": {**r.latency.summary(), **latency},
        "rss_kb": r.rss_kb,
        "load": r.load,
        "accounted": r.accounted,
        "versions": r.versions,
    }


def _num(text: str) -> float | None:
    return None if text == "n/a" else float(text)


# -- processes ------------------------------------------------------------------------------------


@dataclass
class Child:
    """A process the bench started, logging to a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise AuditstreamError(
                f"{self.name} exited with status {self.proc.returncode}; the end of "
                f"{self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def peak_rss_kb(self) -> int | None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return None

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {timeout:.0f} s of SIGTERM; killing it")
                self.proc.kill()
        return self.proc.wait(10)


def spawn(name: str, argv: list[str], settings: Settings, log_dir: Path) -> Child:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AUDITSTREAM_")}
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            env={**clean, **to_env(settings)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, proc, log_path)


def spawn_command(name: str, settings: Settings, log_dir: Path, *args: str) -> Child:
    return spawn(name, [sys.executable, "-m", "pipeline.cli", *args], settings, log_dir)


# -- the namespace --------------------------------------------------------------------------------


@dataclass
class Namespace:
    """Everything this run creates, so it can all be removed at the end."""

    suffix: str
    settings: Settings
    tmp: Path
    bulk_prefix: str
    faust_topics: tuple[str, str]
    faust_group: str
    children: list[Child] = field(default_factory=list)

    @property
    def alias(self) -> str:
        return self.settings.opensearch.events_index_prefix

    def topics(self) -> list[str]:
        return [*self.settings.topics.all(), *self.faust_topics]

    def groups(self) -> list[str]:
        g = self.settings.groups
        return [g.worker, g.sink_opensearch, g.sink_archive, self.faust_group]

    def index_prefixes(self) -> list[str]:
        o = self.settings.opensearch
        return [o.events_index_prefix, o.alerts_index_prefix, self.bulk_prefix]


def make_namespace(local: Settings, tmp: Path) -> Namespace:
    from pipeline.topics import with_suffix

    suffix = f"bench-{secrets.token_hex(3)}"
    base = with_suffix(local, suffix)
    settings = base.model_copy(
        update={
            "opensearch": base.opensearch.model_copy(
                update={
                    "events_index_prefix": f"{suffix}-events",
                    "alerts_index_prefix": f"{suffix}-alerts",
                }
            ),
            "archive": base.archive.model_copy(
                update={"backend": "filesystem", "path": tmp / "archive"}
            ),
            "worker": base.worker.model_copy(
                update={"data_dir": tmp / "worker", "metrics_port": None}
            ),
            "sink": base.sink.model_copy(update={"metrics_port": None}),
        }
    )
    return Namespace(
        suffix=suffix,
        settings=settings,
        tmp=tmp,
        bulk_prefix=f"{suffix}-bulk",
        faust_topics=(f"{suffix}-faust-in", f"{suffix}-faust-out"),
        faust_group=f"{suffix}-faust",
    )


def cleanup(ns: Namespace) -> None:
    """Stop what still runs; delete the bench's indices, templates, topics and groups."""
    for child in ns.children:
        child.stop()
    try:
        _delete_indices(ns)
    except Exception as exc:  # report, and go on cleaning up Kafka
        say(f"could not delete the bench indices {ns.suffix}-*: {exc}")
    try:
        _delete_kafka(ns)
    except Exception as exc:
        say(f"could not delete the bench topics or groups *{ns.suffix}*: {exc}")


def _delete_indices(ns: Namespace) -> None:
    client = _opensearch(ns.settings)
    for prefix in ns.index_prefixes():
        client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
        if client.indices.exists_index_template(name=prefix):
            client.indices.delete_index_template(name=prefix)


def _delete_kafka(ns: Namespace) -> None:
    """Delete the bench's topics and groups; a group whose member was killed empties
    only when its session times out, so that deletion is retried until then."""
    from confluent_kafka import KafkaError, KafkaException

    absent = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.GROUP_ID_NOT_FOUND}
    admin = _admin(ns.settings)
    topics = admin.delete_topics(ns.topics(), operation_timeout=30, request_timeout=30)
    pending = list(ns.groups())
    deadline = time.monotonic() + ns.settings.worker.session_timeout_s + 10
    futures = dict(topics)
    while pending:
        groups = admin.delete_consumer_groups(pending, request_timeout=30)
        pending = []
        for name, future in groups.items():
            try:
                future.result()
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                code = error.code() if isinstance(error, KafkaError) else None
                if code == KafkaError.NON_EMPTY_GROUP and time.monotonic() < deadline:
                    pending.append(name)
                elif code not in absent:
                    say(f"  could not delete {name}: {exc}")
        if pending:
            time.sleep(2)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (isinstance(error, KafkaError) and error.code() in absent):
                say(f"  could not delete {name}: {exc}")


# -- clients --------------------------------------------------------------------------------------


def _opensearch(settings: Settings) -> Any:
    from opensearchpy import OpenSearch

    o = settings.opensearch
    auth = None
    if o.username:
        auth = (o.username, o.password.get_secret_value() if o.password else "")
    return OpenSearch(hosts=[o.url], http_auth=auth, timeout=max(o.timeout_s, 60.0))


def _admin(settings: Settings) -> Any:
    from confluent_kafka.admin import AdminClient

    # log_level 4: no notice-level lines (e.g. BGQUEUE on destroy) on the terminal
    return AdminClient({**settings.kafka.client_config(), "log_level": 4})


def create_topics(settings: Settings, names: Sequence[str], partitions: int) -> None:
    """Create plain topics and wait until every partition has a leader."""
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    admin = _admin(settings)
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    )
    for future in futures.values():
        future.result()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=15).topics
        if all(
            n in meta
            and len(meta[n].partitions) == partitions
            and all(p.leader >= 0 for p in meta[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.2)
    raise ServiceUnavailable(f"Kafka created {', '.join(names)} but gave them no leaders in 60 s")


def search_count(client: Any, alias: str) -> int:
    """Documents searchable through ``alias`` after a refresh; 0 before its first index exists."""
    from opensearchpy.exceptions import NotFoundError

    try:
        client.indices.refresh(index=alias, ignore_unavailable=True, allow_no_indices=True)
        return int(
            client.count(index=alias, ignore_unavailable=True, allow_no_indices=True)["count"]
        )
    except NotFoundError:
        return 0


class ArchiveCounter:
    """Records in the archive's Avro container files of one topic (headers read once each)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._counts: dict[Path, int] = {}

    def count(self) -> int:
        import fastavro

        if self.root.is_dir():
            for path in self.root.glob("*/*.avro"):
                if path.name.startswith(".") or path in self._counts:
                    continue
                with path.open("rb") as fh:
                    meta = fastavro.reader(io.BytesIO(fh.read(64 * 1024))).metadata
                self._counts[path] = int(meta["auditstream.count"])
        return sum(self._counts.values())


# -- the events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """One simulated event: its id, key, encoded value and the ECS document the sink writes."""

    event_id: str
    key: bytes
    value: bytes
    doc: dict[str, Any]


def prepare_events(settings: Settings, count: int, seed: int) -> list[Prepared]:
    """``count`` events from the last minutes, encoded, and through the worker's stages to ECS."""
    from pipeline import ecs
    from pipeline.codec import Decoder
    from pipeline.producer import AuditProducer
    from pipeline.schemas import ENRICHED_EVENT, default_store
    from pipeline.simulate import Simulator
    from pipeline.worker.processor import InputRecord, Processor

    store = default_store()
    processor = Processor(settings, store)
    decoder = Decoder(store, store.latest(ENRICHED_EVENT))
    now_ms = int(time.time() * 1000)
    start = datetime.now(tz=UTC) - timedelta(minutes=15)
    partitions = settings.topics.partitions
    simulator = Simulator(seed)
    out: list[Prepared] = []
    with AuditProducer(settings) as encoder:  # only its encode(): validated, framed Avro
        for n in range(count):
            # spread evenly over ten minutes that ended five minutes ago
            event = simulator.event(start + timedelta(seconds=600 * n / count))
            key, value = str(event["actor"]["id"]).encode(), encoder.encode(event)
            record = InputRecord(settings.topics.input, n % partitions, n, now_ms, key, value, [])
            (output,) = processor.process(record)
            if output.topic != settings.topics.enriched:
                raise AuditstreamError(
                    f"the worker's stages dead-lettered simulated event {event['event_id']} "
                    "(bench events must be valid; the reason is logged above)"
                )
            doc = ecs.to_document(decoder.decode(output.value).record)
            out.append(Prepared(str(event["event_id"]), key, value, doc))
    return out


def produce(settings: Settings, topic: str, events: Sequence[Prepared]) -> float:
    """Produce the encoded events as fast as Kafka takes them; the seconds it took."""
    from pipeline.producer import AuditProducer

    began = time.monotonic()
    with AuditProducer(settings, topic=topic) as producer:
        for item in events:
            producer.produce_raw(item.value, key=item.key)
    return time.monotonic() - began


# -- 1. baseline A: OpenSearch bulk ---------------------------------------------------------------


def _events_template(prefix: str, settings: Settings) -> dict[str, Any]:
    """The shipped events template for ``<prefix>-*``, as the sink installs it."""
    from pipeline.sinks.opensearch import EVENTS_TEMPLATE, load_template, render_template

    return render_template(
        load_template(EVENTS_TEMPLATE),
        prefix,
        shards=settings.opensearch.number_of_shards,
        replicas=settings.opensearch.number_of_replicas,
    )


def bench_bulk(ns: Namespace, events: Sequence[Prepared]) -> Throughput:
    """Bulk-index the documents into a scratch index: docs/s with no Kafka and no processing."""
    from opensearchpy import helpers

    from pipeline.ecs import iso

    client = _opensearch(ns.settings)
    client.indices.put_index_template(
        name=ns.bulk_prefix, body=_events_template(ns.bulk_prefix, ns.settings)
    )
    index = f"{ns.bulk_prefix}-{datetime.now(tz=UTC):%Y.%m.%d}"
    client.indices.create(index=index)
    ingested = iso(datetime.now(tz=UTC))
    actions = [
        {
            "_op_type": "create",
            "_index": index,
            "_id": e.event_id,
            "_source": {**e.doc, "event": {**e.doc["event"], "ingested": ingested}},
        }
        for e in events
    ]
    began = time.monotonic()
    helpers.bulk(client, actions, chunk_size=BULK_CHUNK, max_retries=3, request_timeout=120)
    elapsed = time.monotonic() - began
    indexed = search_count(client, index)
    if indexed != len(events):
        raise AuditstreamError(f"baseline A: {indexed} of {len(events)} documents in {index}")
    n = len(events)
    return Throughput(n, n, elapsed, elapsed)


# -- 2. baseline B: a bare Faust agent ------------------------------------------------------------


def bench_faust(ns: Namespace, events: Sequence[Prepared]) -> Throughput:
    """The records forwarded topic to topic by a bare Faust agent awaiting each send."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    source, sink = ns.faust_topics
    partitions = ns.settings.topics.partitions
    create_topics(ns.settings, [source, sink], partitions)
    produce(ns.settings, source, events)
    consumer = Consumer(
        {
            **ns.settings.kafka.client_config(),
            "group.id": f"{ns.suffix}-reader",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
        }
    )
    consumer.assign([TopicPartition(sink, p, OFFSET_BEGINNING) for p in range(partitions)])
    argv = [
        sys.executable, "-m", "pipeline.bench.forwarder",
        "--bootstrap", ns.settings.kafka.bootstrap_servers, "--group", ns.faust_group,
        "--source", source, "--sink", sink, "--datadir", str(ns.tmp / "faust"),
    ]  # fmt: skip
    child = spawn("faust-forwarder", argv, ns.settings, ns.tmp)
    ns.children.append(child)
    watch = Watch(len(events), time.monotonic())
    seen = 0
    deadline = watch.started + max(180.0, len(events) / 100)
    try:
        while not watch.observe(time.monotonic(), seen):
            child.check()
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"the Faust forwarder passed on {seen} of {len(events)}")
            seen += sum(1 for m in consumer.consume(5000, 0.1) if m.error() is None)
    finally:
        consumer.close()
        child.stop()
    return watch.result()


# -- 3. the pipeline end to end -------------------------------------------------------------------


def start_pipeline(ns: Namespace) -> list[Child]:
    logs = ns.tmp
    children = [
        spawn_command("worker", ns.settings, logs, "worker"),
        spawn_command("sink-opensearch", ns.settings, logs, "sink", "opensearch"),
        spawn_command("sink-archive", ns.settings, logs, "sink", "archive"),
    ]
    ns.children += children
    return children


class TopicCounter:
    """Records in a topic: the sum of its high watermarks (its producers use no transactions)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer(
            {**settings.kafka.client_config(), "group.id": f"{topic}-counter"}
        )
        self._partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]

    def count(self) -> int:
        return sum(
            self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            for tp in self._partitions
        )

    def close(self) -> None:
        self._consumer.close()


@dataclass(frozen=True)
class Completion:
    enriched: Watch
    searchable: Watch
    archived: Watch

    def counts(self) -> str:
        return ", ".join(
            f"{name} {w.last:,}"
            for name, w in (
                ("enriched", self.enriched),
                ("searchable", self.searchable),
                ("archived", self.archived),
            )
        )


def wait_complete(
    ns: Namespace, children: Sequence[Child], target: int, started: float, timeout_s: float
) -> Completion:
    """Poll the enriched topic, the search count and the archive until all reach ``target``."""
    client = _opensearch(ns.settings)
    archive = ArchiveCounter(Path(ns.settings.archive.path) / ns.settings.topics.input)
    enriched, dead = (
        TopicCounter(ns.settings, t)
        for t in (ns.settings.topics.enriched, ns.settings.topics.dead_letter)
    )
    done = Completion(Watch(target, started), Watch(target, started), Watch(target, started))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            for child in children:
                child.check()
            counts = (enriched.count(), search_count(client, ns.alias), archive.count())
            now = time.monotonic()
            reached = [
                w.observe(now, c)
                for w, c in zip(
                    (done.enriched, done.searchable, done.archived), counts, strict=True
                )
            ]
            if all(reached):
                return done
            if now > deadline:
                raise ServiceUnavailable(
                    f"after {timeout_s:.0f} s of {target:,} events: {done.counts()}, "
                    f"dead-lettered {dead.count():,}; logs in {ns.tmp}"
                )
            time.sleep(POLL_S)
    finally:
        enriched.close()
        dead.close()


@dataclass(frozen=True)
class PipelineRun:
    searchable: Throughput  # the pipeline's measure
    enriched: Throughput  # the worker alone: N in the enriched topic
    archive_s: float  # until the archive holds the N raw input records, start-up included
    produce_s: float  # producing the N records beforehand
    children: list[Child]


def bench_pipeline(ns: Namespace, events: Sequence[Prepared]) -> PipelineRun:
    """Throughput of worker + both sinks over records already waiting in the input topic."""
    from pipeline.topics import ensure_group_offsets, ensure_topics

    ensure_topics(ns.settings)
    ensure_group_offsets(ns.settings)
    produce_s = produce(ns.settings, ns.settings.topics.input, events)
    say(f"  {len(events):,} records in {ns.settings.topics.input} ({produce_s:.2f} s)")
    started = time.monotonic()
    children = start_pipeline(ns)
    timeout = max(300.0, len(events) / 50)
    done = wait_complete(ns, children, len(events), started, timeout)
    archive_s = (done.archived.done_at or started) - started
    return PipelineRun(
        done.searchable.result(), done.enriched.result(), archive_s, produce_s, children
    )


# -- 4. latency at a steady rate ------------------------------------------------------------------


class VisibilityPoller(threading.Thread):
    """Asks OpenSearch (``ids`` query, no refresh) when each sampled event becomes searchable."""

    def __init__(self, client: Any, alias: str) -> None:
        super().__init__(name="bench-visibility", daemon=True)
        self._client = client
        self._alias = alias
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._halt = threading.Event()
        self.latencies_ms: list[float] = []
        self.errors = 0

    def expect(self, event_id: str, produced_at: float) -> None:
        with self._lock:
            self._pending[event_id] = produced_at

    def outstanding(self) -> int:
        with self._lock:
            return len(self._pending)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def run(self) -> None:
        while not self._halt.wait(LATENCY_POLL_S):
            with self._lock:
                ids = list(self._pending)
            for start in range(0, len(ids), IDS_BATCH):
                self._poll(ids[start : start + IDS_BATCH])

    def _poll(self, ids: list[str]) -> None:
        body = {"query": {"ids": {"values": ids}}, "_source": False, "size": len(ids)}
        try:
            hits = self._client.search(
                index=self._alias, body=body, ignore_unavailable=True, allow_no_indices=True
            )["hits"]["hits"]
        except Exception:  # counted and retried on the next round
            self.errors += 1
            return
        now = time.monotonic()
        with self._lock:
            for hit in hits:
                produced_at = self._pending.pop(hit["_id"], None)
                if produced_at is not None:
                    self.latencies_ms.append((now - produced_at) * 1000)


def produce_steady(
    ns: Namespace, poller: VisibilityPoller, children: Sequence[Child], rate: float, total: int
) -> float:
    """Send ``total`` fresh events evenly spaced at ``rate``; every 10th is handed to ``poller``."""
    from pipeline.producer import AuditProducer
    from pipeline.simulate import Simulator

    simulator = Simulator(secrets.randbits(32))
    began = time.monotonic()
    with AuditProducer(ns.settings) as producer:
        for n in range(total):
            delay = began + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if n % 1000 == 0:
                for child in children:
                    child.check()
            event = simulator.event(datetime.now(tz=UTC))
            if n % SAMPLE_EVERY == 0:
                poller.expect(str(event["event_id"]), time.monotonic())
            producer.send(event)
    return time.monotonic() - began


def bench_latency(ns: Namespace, children: Sequence[Child], rate: float, seconds: float) -> Latency:
    total = max(1, round(rate * seconds))
    poller = VisibilityPoller(_opensearch(ns.settings), ns.alias)
    poller.start()
    try:
        produce_s = produce_steady(ns, poller, children, rate, total)
        deadline = time.monotonic() + 60
        while poller.outstanding() and time.monotonic() < deadline:
            for child in children:
                child.check()
            time.sleep(0.2)
    finally:
        poller.stop()
    if poller.errors:
        say(f"  {poller.errors} visibility queries failed (retried)")
    return Latency(rate, seconds, total, produce_s, poller.latencies_ms, poller.outstanding())


# -- the run --------------------------------------------------------------------------------------


def versions(settings: Settings) -> dict[str, str]:
    import confluent_kafka

    found = {"python": platform.python_version()}
    for name in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    found["librdkafka"] = confluent_kafka.libversion()[0]
    try:
        found["OpenSearch"] = str(_opensearch(settings).info()["version"]["number"])
    except Exception:
        found["OpenSearch"] = "?"
    found["Kafka"] = f"{settings.stack.kafka_version} (local stack)"
    return found


def start_stack(settings: Settings) -> Settings:
    from pipeline.stack.manager import LocalStack, local_client_settings

    say("starting the local stack if it is not running …")
    try:
        LocalStack(settings, progress=lambda m: say(f"  {m}")).up(topics=False)
    except (AuditstreamError, OSError) as exc:
        raise StackError(
            f"the local stack could not start, so nothing was measured: {exc}\n"
            "See `auditstream stack status` and the logs it names."
        ) from exc
    return local_client_settings(settings)


def measure(args: argparse.Namespace, ns: Namespace, local: Settings) -> BenchReport:
    load = {"start": os.getloadavg()}
    say(f"preparing {args.events:,} events (namespace {ns.suffix}) …")
    events = prepare_events(ns.settings, args.events, seed=secrets.randbits(32))
    say("1/5 baseline A: OpenSearch bulk ingest …")
    bulk = bench_bulk(ns, events)
    load["A"] = os.getloadavg()
    say(f"  {_rate(bulk.steady_rate)} docs/s; 2/5 baseline B: bare Faust agent …")
    faust = bench_faust(ns, events)
    load["B"] = os.getloadavg()
    say(f"  {_rate(faust.steady_rate)} events/s; 3/5 pipeline end to end …")
    run = bench_pipeline(ns, events)
    children = run.children
    load["P"] = os.getloadavg()
    say(f"  {_rate(run.searchable.steady_rate)} events/s; 4/5 latency at {args.rate:g}/s …")
    latency = bench_latency(ns, children, args.rate, args.latency_seconds)
    load["latency"] = os.getloadavg()
    expected = args.events + latency.produced
    say(f"  waiting until all {expected:,} events are searchable and archived …")
    done = wait_complete(ns, children, expected, time.monotonic(), 120)
    rss = {child.name: child.peak_rss_kb() for child in children}
    for child in children:
        child.stop()
    say("5/5 the worker alone, without and with detection …")
    from pipeline.bench.worker_alone import bench_workers

    workers = bench_workers(local, ns.tmp, events)
    load["W"] = os.getloadavg()
    load["end"] = os.getloadavg()
    return BenchReport(
        events=args.events,
        bulk=bulk,
        faust=faust,
        pipeline=run.searchable,
        worker=run.enriched,
        archive_s=run.archive_s,
        produce_s=run.produce_s,
        latency=latency,
        rss_kb=rss,
        load=load,
        accounted={
            "enriched": (done.enriched.last, expected),
            "searchable": (done.searchable.last, expected),
            "archived": (done.archived.last, expected),
        },
        versions=versions(ns.settings),
        workers=workers,
    )


def check(args: argparse.Namespace) -> None:
    if args.events < 2:
        raise ConfigError("--events must be at least 2")
    if args.rate <= 0 or args.latency_seconds <= 0:
        raise ConfigError("--rate and --latency-seconds must be positive")


def run(args: argparse.Namespace, settings: Settings) -> int:
    check(args)
    local = start_stack(settings)
    tmp = Path(tempfile.mkdtemp(prefix="auditstream-bench-"))
    ns = make_namespace(local, tmp)
    ok = False
    try:
        report = measure(args, ns, local)
        ok = True
    finally:
        say("cleaning up the bench topics, groups and indices (the stack keeps running) …")
        cleanup(ns)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"logs and the archive kept in {tmp}")
    print(format_report(report))
    if args.json:
        print(json.dumps(report_dict(report), indent=2))
    return 0
