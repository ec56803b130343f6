"""The export rate: ``auditstream search --json`` itself beside a bare PIT loop.

Both walk the same window of the corpus over a point in time with
``search_after`` in pages of the CLI's default size. The CLI runs as it does
for a user (:func:`pipeline.search.commands.run_search`: identity, role,
masking, JSON lines, the read recorded on the bench's own input topic), its
output written on to /dev/null through :class:`IdTally`, which notes each
``event.id``; the baseline notes each ``_id`` (the sink's ``_id`` is the event
id). Each is checked to have returned every matching document exactly once:
as many lines as matches, and as many distinct ids (kept as 64-bit hashes, to
keep memory small; two of a million colliding is a one-in-30-million chance).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any, TextIO, cast

from opensearchpy import OpenSearch

from pipeline.bench.common import say
from pipeline.bench.search_corpus import hour_counts
from pipeline.bench.search_load import Corpus
from pipeline.bench.search_report import EXPORT_PAGE, ExportResult
from pipeline.ecs import iso
from pipeline.search.query import SORT_ASC, Filters, build_query
from pipeline.settings import Settings


def export_until(corpus: Corpus, target: int) -> datetime:
    """The first hour boundary after the corpus's start by which ``target`` documents occurred."""
    counts = hour_counts(corpus.documents, corpus.start, corpus.hours)
    total = 0
    for h, n in enumerate(counts):
        total += n
        if total >= target:
            return corpus.start + timedelta(hours=h + 1)
    return corpus.end


def cli_args(role: str, **overrides: Any) -> argparse.Namespace:
    """What ``auditstream search`` parses from its command line, with ``overrides``."""
    values: dict[str, Any] = {
        "query": None, "dsl": None, "since": None, "until": None, "user": [], "ip": [],
        "action": [], "outcome": [], "alerts": False, "order": None, "format": "table",
        "fields": None, "limit": None, "page_size": EXPORT_PAGE, "as_user": "auditstream-bench",
        "role": role,
    }  # fmt: skip
    values.update(overrides)
    return argparse.Namespace(**values)


class IdTally(io.TextIOBase):
    """A text sink for the CLI's JSON lines: written on to /dev/null, each ``event.id`` noted."""

    def __init__(self, sink: TextIO) -> None:
        super().__init__()
        self.sink = sink
        self.lines = 0
        self.ids: set[int] = set()

    def write(self, text: str) -> int:
        self.sink.write(text)
        self.lines += 1
        at = text.find('"id":"')  # event.id: the first "id" of a document in stored order
        if at >= 0 and text[at + 42 : at + 43] == '"':
            self.ids.add(hash(text[at + 6 : at + 42]))
        else:
            self.ids.add(hash(json.loads(text)["event"]["id"]))
        return len(text)


def cli_search(settings: Settings, args: argparse.Namespace, out: TextIO) -> None:
    from pipeline.search.commands import run_search

    quiet = logging.getLogger("opensearch")  # the security plugin's absence, logged each time
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its one-line summary, each time
            run_search(args, settings, out=out)
    finally:
        quiet.setLevel(level)


def bare_export(client: OpenSearch, index: str, query: dict[str, Any]) -> tuple[int, set[int]]:
    """The baseline: opensearch-py's PIT and ``search_after``, no formatting."""
    pit = client.create_pit(index=index, params={"keep_alive": "2m"})["pit_id"]
    ids: set[int] = set()
    returned = 0
    after: list[Any] | None = None
    try:
        while True:
            body: dict[str, Any] = {
                "size": EXPORT_PAGE,
                "query": query,
                "sort": SORT_ASC,
                "pit": {"id": pit, "keep_alive": "2m"},
                "track_total_hits": False,
            }
            if after is not None:
                body["search_after"] = after
            batch = client.search(body=body)["hits"]["hits"]
            for hit in batch:
                ids.add(hash(hit["_id"]))
            returned += len(batch)
            if len(batch) < EXPORT_PAGE:
                return returned, ids
            after = batch[-1]["sort"]
    finally:
        client.delete_pit(body={"pit_id": [pit]})


def measure_exports(
    client: OpenSearch, settings: Settings, corpus: Corpus, target: int
) -> tuple[tuple[datetime, datetime], list[ExportResult]]:
    since, until = corpus.start, export_until(corpus, target)
    query = build_query(Filters(since=since, until=until))
    expected = int(client.count(index=corpus.events, body={"query": query})["count"])
    say(f"exporting {expected:,} documents three ways …")
    began = time.perf_counter()
    returned, ids = bare_export(client, corpus.events, query)
    results = [
        ExportResult("bare opensearch-py PIT + search_after loop", returned,
                     time.perf_counter() - began, len(ids), expected),
    ]  # fmt: skip
    del ids
    for role in ("analyst", "auditor"):
        args = cli_args(role, format="json", since=iso(since), until=iso(until), limit=0)
        with open("/dev/null", "w") as devnull:
            tally = IdTally(devnull)
            began = time.perf_counter()
            cli_search(settings, args, cast(TextIO, tally))
            seconds = time.perf_counter() - began
        masked = "masked" if role == "analyst" else "nothing masked"
        results.append(
            ExportResult(f"auditstream search --json as {role} ({masked})", tally.lines,
                         seconds, len(tally.ids), expected)
        )  # fmt: skip
        say(f"  {results[-1].label}: {results[-1].rate:,.0f} docs/s")
    return (since, until), results
