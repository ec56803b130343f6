"""Two archive sinks, one partition: the one paused mid-write must adopt, never copy.

Both sinks run in one consumer group on topics with one partition each, so one
sink holds everything and the other waits. The holder stops itself (SIGSTOP)
in the middle of a write — holding a batch right before claiming its object,
or right after the claim and before the chain entry — and stays stopped past
the group's session timeout, so the partitions move to the other sink, which
archives on. Then the stopped one is resumed (SIGCONT) and finishes its write.
DESIGN (Accounting, Integrity): one chain, every input offset archived once,
``verify`` clean, ``reconcile`` accounting for everything.

The stop is made exact the way the SIGKILL tests start their sink: a small
launcher (test code, not a production path) wraps the filesystem store's
claim, and the first sink to claim an object of the second wave stops itself
there. A marker file makes it happen once, in whichever sink holds the partition.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.codec import Encoding, encode
from pipeline.integrity.chain import chain_prefix, read_chain_head
from pipeline.integrity.commands import reconcile_settings
from pipeline.schemas import ACCESS_EVENT, default_store
from pipeline.settings import Settings
from pipeline.sinks.archive import object_key, partition_prefix
from pipeline.sinks.commands import opensearch_runner
from pipeline.sinks.storage import ObjectStore, open_store
from pipeline.worker.processor import InputRecord, Processor
from tests.factories import make_event
from tests.integration.conftest import unique_settings
from tests.integration.processes import PipelineProcess, read_topic
from tests.integration.test_end_to_end import _wait_for
from tests.integration.test_integrity import (
    ArchiveProcess,
    assert_every_offset_once,
    sign_and_verify,
)
from tests.integration.test_sinks import Message, _with, lag, produce, running

STORE = default_store()
WAVE = 1000  # records per wave; the sink holding the partition stops on the second wave

_PAUSING_SINK = """
import argparse, logging, os, signal, sys
from pipeline.settings import load_settings
from pipeline.sinks.commands import run_archive
from pipeline.sinks.storage import FilesystemStore

log = logging.getLogger("it.pause")
topic, first, where, marker = (
    os.environ["IT_PAUSE_" + name] for name in ("TOPIC", "AT", "WHERE", "MARKER")
)
claim = FilesystemStore.put_if_absent


def stop_once(key):
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return  # the other sink stopped already
    log.warning("stopping myself %s claiming %s", where, key)
    os.kill(os.getpid(), signal.SIGSTOP)
    log.warning("resumed %s claiming %s", where, key)


def put_if_absent(self, key, data):
    ours = key.startswith(topic + "/") and key.endswith(".avro") and int(key[-25:-5]) >= int(first)
    if ours and where == "before":
        stop_once(key)
    claimed = claim(self, key, data)
    if ours and where == "after" and claimed:
        stop_once(key)
    return claimed


FilesystemStore.put_if_absent = put_if_absent
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
args = argparse.Namespace(instance_id=sys.argv[1], session_timeout_ms=6000, metrics_port=None)
sys.exit(run_archive(args, load_settings()))
"""


@pytest.fixture
def one_partition_settings(stack_settings: Settings, tmp_path: Path) -> Settings:
    """Own topics with ONE partition each, own groups, archive and index prefixes."""
    tag = uuid.uuid4().hex[:8]
    settings = unique_settings(_with(stack_settings, topics={"partitions": 1}), f"takeover-{tag}")
    return _with(
        settings,
        archive={"path": tmp_path / "archive"},
        opensearch={
            "events_index_prefix": f"it-{tag}-events",
            "alerts_index_prefix": f"it-{tag}-alerts",
        },
        sink={
            "batch_max_records": 500,
            "batch_max_ms": 200,
            "archive_max_records": 200,
            "archive_max_ms": 150,
            "retry_initial_s": 0.2,
            "retry_max_s": 1.0,
        },
    )


def _events(n: int) -> list[Message]:
    access = STORE.latest(ACCESS_EVENT)
    events = (make_event() for _ in range(n))
    return [
        (e["actor"]["id"].encode(), encode(e, access, Encoding.SINGLE_OBJECT), None, 0)
        for e in events
    ]


def _archived_to(store: ObjectStore, topic: str) -> int:
    """The next offset the chain of ``topic``[0] expects (what is archived and chained)."""
    head = read_chain_head(store, topic, 0)
    return head.next_offset if head is not None else 0


def _logged(proc: PipelineProcess, text: str) -> bool:
    return proc.log_path.exists() and text in proc.log_path.read_text(errors="replace")


def _first_offsets(keys: list[str]) -> list[int]:
    return [int(k.rsplit("/", 1)[1].split(".")[0]) for k in keys]


@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_sink_paused_mid_write_adopts_what_its_successor_archived(
    moment: str, one_partition_settings: Settings, tmp_path: Path
) -> None:
    settings = one_partition_settings
    topics = settings.topics
    topic = topics.input
    store = open_store(settings.archive)
    env = {
        "IT_PAUSE_TOPIC": topic,
        "IT_PAUSE_AT": str(WAVE),
        "IT_PAUSE_WHERE": moment,
        "IT_PAUSE_MARKER": str(tmp_path / "paused"),
    }
    sinks = [
        ArchiveProcess(
            settings,
            log_dir=tmp_path,
            name=f"archive-{n}",
            instance=f"archiver-{n}",
            script=_PAUSING_SINK,
        )
        for n in "ab"
    ]
    delivered = produce(settings, topic, _events(WAVE))
    try:
        sinks[0].start(**env)
        _wait_for(lambda: _archived_to(store, topic) >= WAVE, "the first wave", sinks[:1])
        sinks[1].start(**env)
        _wait_for(lambda: _logged(sinks[1], "archive: assigned"), "the second sink to join", sinks)

        # The second wave: whichever sink holds the partition stops itself mid-write.
        delivered += produce(settings, topic, _events(WAVE))
        _wait_for(lambda: any(s.paused() for s in sinks), "a sink to stop mid-write", sinks, 60)
        paused, taker = sinks if sinks[0].paused() else sinks[::-1]
        keys = store.list(partition_prefix(topic, 0))
        if moment == "before":  # it holds a batch; nothing of the second wave is claimed yet
            assert max(_first_offsets(keys)) < WAVE, keys
        else:  # its object is claimed; the chain entry is not written yet
            assert object_key(topic, 0, WAVE) in keys
        assert _archived_to(store, topic) == WAVE

        # Past the session timeout the partitions move; the other sink archives on.
        delivered += produce(settings, topic, _events(WAVE))
        _wait_for(
            lambda: _archived_to(store, topic) >= 3 * WAVE, "the other sink to take over", [taker]
        )
        assert paused.paused(), "the stopped sink ran on: the takeover was not tested"

        # Resumed, it finishes its write: it must find the claim taken and adopt it.
        paused.resume()
        adopted = "already exists" if moment == "before" else "was already written; adopting it"
        _wait_for(lambda: _logged(paused, adopted), "the resumed sink to adopt", sinks, 60)
        delivered += produce(settings, topic, _events(WAVE))
        _wait_for(lambda: _archived_to(store, topic) >= 4 * WAVE, "the fourth wave", sinks)

        # The worker's outputs (made in-process), archived and indexed, for reconcile.
        processor = Processor(settings, STORE)
        outputs: dict[str, list[Any]] = {topics.enriched: [], topics.dead_letter: []}
        for msg in read_topic(settings, topic, len(delivered)):
            for out in processor.process(InputRecord.from_message(msg)):
                outputs[out.topic].append((out.key, out.value, out.headers or None, None))
        for out_topic, batch in outputs.items():
            produce(settings, out_topic, batch)
        archive_topics = [topic, topics.enriched, topics.dead_letter, topics.alerts]
        search_topics = [topics.enriched, topics.alerts]
        with running(opensearch_runner(settings)):
            _wait_for(
                lambda: (
                    lag(settings, settings.groups.sink_archive, archive_topics) == 0
                    and lag(settings, settings.groups.sink_opensearch, search_topics) == 0
                ),
                "the archive and the search tier to catch up",
                sinks,
            )
    finally:
        statuses = [s.stop() for s in sinks]
    assert statuses == [0, 0], "\n".join(f"--- {s.log_path.name}\n{s.log_tail()}" for s in sinks)

    assert len(delivered) == 4 * WAVE
    assert_every_offset_once(store, topic, delivered)
    objects = store.list(partition_prefix(topic, 0))
    entries = store.list(chain_prefix(topic, 0))
    assert _first_offsets(entries) == _first_offsets(objects), "one chain entry per object"
    summary = sign_and_verify(store)
    report = reconcile_settings(settings, None, None)
    assert report.ok, report.findings
    assert (report.raw, report.indexed, report.duplicates) == (4 * WAVE, 4 * WAVE, 0)
    print(f"\nafter a takeover {moment} the claim: {summary}; reconcile: {report.summary()}")
