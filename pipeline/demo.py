"""``auditstream demo``: the whole path on one machine, end to end.

Starts the local stack, the worker and both sinks, sends simulated traffic,
waits until every event is searchable, then runs a search and shows where the
archive lies.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import AuditstreamError, ServiceUnavailable
from pipeline.settings import Settings, to_env


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="stack up, worker and sinks, simulated traffic, then a search",
    )
    parser.add_argument("--events", type=int, default=5000, help="events to simulate")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--seed", type=int, default=None, help="simulator seed (default: time)")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the worker and sinks running after the demo",
    )
    parser.set_defaults(func=run)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _spawn(settings: Settings, log_dir: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env={**os.environ, **to_env(settings)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _count(client: Any, alias: str) -> int:
    if not client.indices.exists_alias(name=alias):
        return 0
    client.indices.refresh(index=alias)
    return int(client.count(index=alias)["count"])


def run(args: argparse.Namespace, settings: Settings) -> int:
    from opensearchpy import OpenSearch

    from pipeline.stack.manager import LocalStack, local_client_settings

    started = time.monotonic()
    say("1/5 starting the local stack (Kafka, OpenSearch, S3 store) …")
    stack = LocalStack(settings, progress=say)
    stack.up()
    settings = _with_example_enrichment(local_client_settings(settings))
    log_dir = Path(settings.stack.state_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    client = OpenSearch(settings.opensearch.url, timeout=30)
    alias = settings.opensearch.events_index_prefix
    before = _count(client, alias)

    say("2/5 starting the worker and both sinks (logs in " + str(log_dir) + ") …")
    procs = {
        "worker": _spawn(settings, log_dir, "worker", "worker"),
        "sink-opensearch": _spawn(settings, log_dir, "sink-opensearch", "sink", "opensearch"),
        "sink-archive": _spawn(settings, log_dir, "sink-archive", "sink", "archive"),
    }
    try:
        say(f"3/5 sending {args.events} simulated events at {args.rate:.0f}/s …")
        _simulate(settings, args)
        say("4/5 waiting until every event is searchable …")
        _wait_searchable(client, alias, before + args.events, procs, log_dir)
        say(f"    {args.events} events searchable {time.monotonic() - started:.0f} s after start")
        say("5/5 searching: the latest failed accesses")
        print(search_report(client, alias))
        print(alerts_report(client, settings.opensearch.alerts_index_prefix))
        print(_archive_summary(settings))
    finally:
        if not args.keep_running:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    say("The stack is still running: `auditstream stack status`, `auditstream stack down`.")
    return 0


def _with_example_enrichment(settings: Settings) -> Settings:
    """Every enricher on, with example sources, unless the settings name real ones."""
    enrich = settings.enrich
    if any((enrich.geoip_city_path, enrich.directory_path, enrich.classification_path)):
        return settings
    from pipeline.stages.enrich.examples import write_examples

    where = Path(settings.stack.state_dir) / "enrichment"
    examples = write_examples(where)
    say(f"    enrichment: example directory, rules and demo geo-IP data in {where}")
    return settings.model_copy(update={"enrich": examples})


def _simulate(settings: Settings, args: argparse.Namespace) -> None:
    from pipeline.producer import AuditProducer
    from pipeline.simulate import Simulator

    seed = args.seed if args.seed is not None else int(time.time())
    began = time.monotonic()
    start = datetime.now(tz=UTC)
    with AuditProducer(settings) as producer:
        for offset_s, event in Simulator(seed).events(
            count=args.events, rate=args.rate, start=start, speed=1.0
        ):
            delay = began + offset_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event["occurred_at"] = min(event["occurred_at"], datetime.now(tz=UTC))
            producer.send(event)


def _wait_searchable(
    client: Any,
    alias: str,
    target: int,
    procs: dict[str, subprocess.Popen[bytes]],
    log_dir: Path,
    timeout_s: float = 300.0,
) -> None:
    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = (log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-30:]
                raise AuditstreamError(
                    f"{name} exited with status {proc.returncode}:\n" + "\n".join(tail)
                )
        count = _count(client, alias)
        if count >= target:
            return
        time.sleep(1)
    raise ServiceUnavailable(
        f"only {count} of {target} events searchable after {timeout_s:.0f} s; "
        f"see the logs in {log_dir}"
    )


def search_report(client: Any, alias: str, size: int = 10) -> str:
    """A readable table of the latest failed accesses, with totals by outcome."""
    result = client.search(
        index=alias,
        body={
            "size": size,
            "sort": [{"@timestamp": "desc"}],
            "query": {"term": {"event.outcome": "failure"}},
            "aggs": {
                "outcomes": {"terms": {"field": "event.outcome"}},
                "actions": {"terms": {"field": "event.action", "size": 5}},
            },
        },
    )
    lines = [
        f"{'@timestamp':<27} {'user.id':<10} {'event.action':<12} {'source.ip':<15} "
        f"{'service.name':<14} event.reason"
    ]
    for hit in result["hits"]["hits"]:
        doc = hit["_source"]
        lines.append(
            f"{doc['@timestamp'][:26]:<27} {doc.get('user', {}).get('id', '-'):<10} "
            f"{doc['event']['action']:<12} {doc.get('source', {}).get('ip', '-'):<15} "
            f"{doc.get('service', {}).get('name', '-'):<14} {doc['event'].get('reason', '-')}"
        )
    outcomes = ", ".join(
        f"{b['key']}: {b['doc_count']}" for b in result["aggregations"]["outcomes"]["buckets"]
    )
    total = client.count(index=alias)["count"]
    lines.append(f"\n{total} events in '{alias}' (failures shown above; {outcomes})")
    return "\n".join(lines)


def alerts_report(client: Any, alias: str) -> str:
    """Alerts raised so far, by detector, with the newest few titles."""
    if not client.indices.exists_alias(name=alias):
        return f"No alerts in '{alias}' yet."
    client.indices.refresh(index=alias)
    result = client.search(
        index=alias,
        body={
            "size": 5,
            "sort": [{"@timestamp": "desc"}],
            "aggs": {"detectors": {"terms": {"field": "rule.name", "size": 20}}},
        },
    )
    buckets = result["aggregations"]["detectors"]["buckets"]
    counts = ", ".join(f"{b['key']}: {b['doc_count']}" for b in buckets) or "none"
    lines = [f"\nAlerts in '{alias}': {counts}"]
    for hit in result["hits"]["hits"]:
        doc = hit["_source"]
        title = doc.get("rule", {}).get("description") or doc.get("message", "")
        lines.append(f"  {doc['@timestamp'][:19]}  {doc['rule']['name']:<24} {title}")
    return "\n".join(lines)


def _archive_summary(settings: Settings) -> str:
    archive = settings.archive
    if archive.backend == "s3":
        return f"Archive: s3://{archive.s3_bucket} at {archive.s3_endpoint}"
    root = Path(archive.path)
    lines = [f"Archive (the record of truth): {root}"]
    for topic in settings.topics.all():
        objects = list((root / topic).glob("*/*.avro")) if (root / topic).is_dir() else []
        if objects:
            size = sum(o.stat().st_size for o in objects)
            lines.append(f"  {topic}/: {len(objects)} objects, {size / 1e6:.1f} MB")
    return "\n".join(lines)
