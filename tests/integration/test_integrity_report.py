"""The evidence report from a real, signed archive, rendered in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.codec import Encoding, encode
from pipeline.integrity import keys
from pipeline.integrity.digest import DigestSigner
from pipeline.schemas import ACCESS_EVENT, default_store
from pipeline.settings import ArchiveSettings, Settings, WorkerSettings, to_env
from pipeline.sinks.archive import ArchiveSink
from pipeline.sinks.base import Batch, Record
from pipeline.sinks.storage import open_store
from pipeline.worker.processor import InputRecord, Processor
from tests.factories import make_event
from tests.integration.test_sinks import alert_value

STORE = default_store()
DAYS = 10
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once, in a fresh profile; fails (never skips) without it."""
    binary = shutil.which("chromium")
    assert binary, "headless Chromium is missing: install Debian's chromium (make system-deps)"
    with tempfile.TemporaryDirectory(prefix="auditstream-chromium-") as profile:
        proc = subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


def console_messages(stderr: str) -> list[str]:
    """What the page wrote to the console (errors, uncaught exceptions, failed loads)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture
def report_settings(tmp_path: Path) -> Settings:
    return Settings(
        archive=ArchiveSettings(path=tmp_path / "archive"),
        worker=WorkerSettings(data_dir=tmp_path / "worker"),
    )


def build_archive(settings: Settings, start: datetime) -> dict[str, int]:
    """Raw, enriched, dead-letter and alert archives of DAYS days of traffic; events per day."""
    topics = settings.topics
    access = STORE.latest(ACCESS_EVENT)
    processor = Processor(settings, STORE)
    per_topic: dict[str, list[tuple[bytes | None, bytes | None, Any]]] = defaultdict(list)
    per_day: dict[str, int] = defaultdict(int)
    inputs: list[tuple[bytes | None, bytes | None, int]] = []
    for day in range(DAYS):
        for i in range(20 + 15 * (day % 4)):
            when = start + timedelta(days=day, minutes=37 * i)
            failed = i % 7 == 0
            event = make_event(
                occurred_at=when,
                actor={"id": f"u{i % 9:05d}", "type": "user", "name": f"user{i}", "tenant": "t"},
                action=("login", "read", "write", "grant", "admin")[i % 5],
                outcome="failure" if failed else "success",
                reason=("permission_denied", "invalid_password")[i % 2] if failed else None,
                resource={"type": "table", "id": f"t{i % 6}", "name": None},
            )
            inputs.append(
                (b"k", encode(event, access, Encoding.SINGLE_OBJECT), int(when.timestamp() * 1000))
            )
            per_day[when.strftime("%Y-%m-%d")] += 1
    inputs.append((None, b"garbage, not an event", inputs[-1][2]))
    for offset, (key, value, ts) in enumerate(inputs):
        per_topic[topics.input].append((key, value, ts + 50))
        record = InputRecord(topics.input, 0, offset, ts + 50, key, value, [])
        for out in processor.process(record):
            per_topic[out.topic].append((out.key, out.value, ts + 80))
    for revision in (1, 2):
        last_seen = start + timedelta(days=2, minutes=revision)
        value = alert_value(revision, last_seen)
        per_topic[topics.alerts].append((b"alert", value, int(last_seen.timestamp() * 1000)))
    sink = ArchiveSink(open_store(settings.archive))
    for topic, rows in per_topic.items():
        sink.open([(topic, 0)])
        records = [Record(topic, 0, o, 2, ts, k, v) for o, (k, v, ts) in enumerate(rows)]
        for i in range(0, len(records), 100):  # several objects per partition
            sink.write(Batch(records=records[i : i + 100], attempts=1))
    return per_day


def test_the_report_renders_in_chromium_without_errors_with_its_chart_drawn(
    report_settings: Settings, tmp_path: Path
) -> None:
    settings = report_settings
    start = (datetime.now(UTC) - timedelta(days=DAYS + 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    per_day = build_archive(settings, start)
    public = tmp_path / "signing.pub"
    key = keys.generate(tmp_path / "signing.pem", public)
    DigestSigner(open_store(settings.archive), key, 3600).sign()

    out = tmp_path / "report.html"
    end = start + timedelta(days=DAYS) - timedelta(microseconds=1)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pipeline.cli", "report"),
            *("--from", start.isoformat(), "--to", end.isoformat()),
            *("--out", str(out), "--public-key", str(public)),
        ],
        env={**os.environ, **to_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    total = sum(per_day.values())
    assert f"{total:,} events" in proc.stdout
    assert "integrity: 1/1 digests valid" in proc.stdout
    page = out.read_text()
    assert "<script" not in page and not re.search(r"(src|href)\s*=", page)
    assert "Verified: 1/1 digests valid" in page and "1 undecodable" in page
    assert "brute_force" in page  # the alert, at its newest revision
    assert "revision 2" in page and "revision 1" not in page

    # Drawn: one bar per day with events, each with a height, in the DOM Chromium built.
    dom = chromium("--dump-dom", out.as_uri()).stdout
    bars = re.findall(r'<rect class="bar" [^>]*height="([0-9.]+)"', dom)
    assert len(bars) == len(per_day) == DAYS
    assert all(float(h) > 0 for h in bars)
    assert "Verified: 1/1 digests valid" in dom

    # Rendered without a console message; a screenshot to look at.
    shot = tmp_path / "report.png"
    run = chromium(
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        out.as_uri(),
    )
    assert console_messages(run.stderr) == []
    assert shot.stat().st_size > 50_000
    print(f"\nreport: {out}\nscreenshot: {shot}")

    # The console check itself catches a broken page.
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>console.error('x'); nope();</script></body></html>")
    caught = console_messages(
        chromium("--enable-logging=stderr", "--v=0", "--dump-dom", broken.as_uri()).stderr
    )
    assert len(caught) == 2
