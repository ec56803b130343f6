"""Lag, alerts and dead letters on the real stack, with a real Prometheus (Debian's package).

Prometheus runs as its own process on a free port with its own TSDB in a temp
dir, scraping a real worker and a real ``auditstream lag-exporter``; its rules
are the shipped template rendered with short ``for:`` durations (``FAST``).
A missing ``prometheus`` binary fails the test: ``make test`` installs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from pipeline.observability.lag import LagReader
from pipeline.observability.rules import FAST, render_rules
from pipeline.producer import AuditProducer
from pipeline.settings import Settings
from pipeline.stack.common import HOST, free_ports
from tests.factories import make_event
from tests.integration.processes import PipelineProcess

T = TypeVar("T")


def _wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


# -- the lag reader against Kafka ----------------------------------------------------------


def test_lag_reader_counts_unconsumed_records_and_their_age(pipeline_settings: Settings):
    settings = pipeline_settings
    topics, groups = settings.topics, settings.groups
    events = [make_event() for _ in range(40)]
    with AuditProducer(settings) as producer:
        for event in events:
            producer.send(event)
    produced_at = time.time()
    time.sleep(1.5)

    reader = LagReader(settings)
    try:
        lags = reader.poll()
        worker_input = [
            lag for lag in lags if lag.group == groups.worker and lag.topic == topics.input
        ]
        assert sum(lag.messages for lag in worker_input) == len(events)
        archive_input = [
            lag for lag in lags if lag.group == groups.sink_archive and lag.topic == topics.input
        ]
        assert sum(lag.messages for lag in archive_input) == len(events)
        assert all(
            lag.messages == 0 for lag in lags if lag.topic in (topics.enriched, topics.alerts)
        )
        for lag in worker_input:
            assert lag.seconds is not None
            if lag.messages:
                # the age of the oldest waiting record: at least the pause above
                assert 1.0 <= lag.seconds <= time.time() - produced_at + 30, lag
            else:
                assert lag.seconds == 0.0

        # The worker group commits everything on the partitions that had records.
        waiting = [lag for lag in worker_input if lag.messages]
        committer = Consumer(
            {
                **settings.kafka.client_config(),
                "group.id": groups.worker,
                "enable.auto.commit": False,
            }
        )
        try:
            committer.commit(
                offsets=[TopicPartition(lag.topic, lag.partition, lag.high) for lag in waiting],
                asynchronous=False,
            )
        finally:
            committer.close()
        after = reader.poll()
    finally:
        reader.close()
    worker_after = [a for a in after if a.group == groups.worker and a.topic == topics.input]
    assert all(a.messages == 0 and a.seconds == 0.0 for a in worker_after)
    # another group's lag is its own
    assert sum(a.messages for a in after if a.group == groups.sink_archive) == len(events)


# -- a real Prometheus ---------------------------------------------------------------------


class Prometheus:
    """One Prometheus server on a free port, with its own config, rules and TSDB."""

    def __init__(self, workdir: Path, scrape: dict[str, int], rules: str) -> None:
        self.port = free_ports(1)[0]
        self.workdir = workdir
        self.log_path = workdir / "prometheus.log"
        (workdir / "rules.yml").write_text(rules)
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": ["rules.yml"],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"{HOST}:{port}"]}]}
                for job, port in scrape.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed; `make test` installs Debian's package")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={HOST}:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for("Prometheus ready", self._ready, timeout=60, every=0.5)
        except AssertionError:
            pytest.fail(f"Prometheus did not start:\n{self.log_tail()}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"Prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url(path + query), timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self, name: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self._get("/api/v1/alerts")["alerts"]
            if a["labels"].get("alertname") == name
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def firing(self, name: str, **labels: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts(name, **labels) if a["state"] == "firing"]

    def value(self, query: str) -> float | None:
        result = self._get("/api/v1/query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def processes() -> Iterator[list[PipelineProcess | Prometheus]]:
    started: list[PipelineProcess | Prometheus] = []
    yield started
    for proc in reversed(started):
        proc.stop()


def test_prometheus_fires_lag_alert_when_the_worker_stops_and_resolves_it_after_restart(
    pipeline_settings: Settings, tmp_path: Path, processes: list[PipelineProcess | Prometheus]
):
    worker_port, exporter_port = free_ports(2)
    settings = pipeline_settings.model_copy(
        update={
            "worker": pipeline_settings.worker.model_copy(
                update={"metrics_port": worker_port, "session_timeout_s": 6.0}
            ),
            "observability": pipeline_settings.observability.model_copy(
                update={"lag_exporter_port": exporter_port, "lag_interval_s": 1.0}
            ),
        }
    )
    group, topic = settings.groups.worker, settings.topics.input

    def start(name: str, *args: str) -> PipelineProcess:
        proc = PipelineProcess(settings, *args, log_dir=tmp_path, name=name).start()
        processes.append(proc)
        return proc

    exporter = start("lag-exporter", "lag-exporter")
    worker = start("worker-1", "worker")
    simulate = start("simulate", "simulate", "--rate", "20", "--seed", "7")
    prometheus = Prometheus(
        tmp_path,
        {"auditstream-worker": worker_port, "auditstream-lag-exporter": exporter_port},
        render_rules(**FAST),
    ).start()
    processes.append(prometheus)

    def logs() -> str:
        return "\n".join(
            f"--- {p.log_path.name}\n{p.log_tail()}"
            for p in processes
            if isinstance(p, PipelineProcess | Prometheus)
        )

    def alive(*procs: PipelineProcess) -> bool:
        for proc in procs:
            if not proc.running():
                raise AssertionError(f"{proc.log_path.name} exited")
        return True

    worker_events = 'sum(auditstream_events_total{job="auditstream-worker",stage="validate"})'
    lag_query = f'max(auditstream_consumer_lag_seconds{{group="{group}",topic="{topic}"}})'
    try:
        # 1. Running and caught up: the worker is scraped and its lag is low.
        _wait_for(
            "worker scraped and caught up",
            lambda: (
                alive(exporter, worker, simulate)
                and prometheus.value('up{job="auditstream-worker"}') == 1
                # the worker has handled traffic: its own /metrics say so
                and (prometheus.value(worker_events) or 0) >= 20
                and (prometheus.value(lag_query) or 99) < 3
                and not prometheus.firing("AuditstreamConsumerLagHigh", group=group)
            ),
            timeout=150,
        )
        assert simulate.running(), simulate.log_tail()

        # 2. The worker stops while traffic continues: the lag alert fires.
        stopped_at = time.monotonic()
        worker.stop()
        firing = _wait_for(
            "AuditstreamConsumerLagHigh firing for the worker group",
            lambda: (
                alive(exporter, simulate)
                and prometheus.firing("AuditstreamConsumerLagHigh", group=group, topic=topic)
            ),
            timeout=90,
        )
        fired_after = time.monotonic() - stopped_at
        assert firing[0]["labels"]["severity"] == "page"
        assert "behind" in firing[0]["annotations"]["summary"]
        _wait_for(
            "AuditstreamWorkerDown firing",
            lambda: prometheus.firing("AuditstreamWorkerDown"),
            timeout=60,
        )
        assert simulate.running(), simulate.log_tail()

        # 3. The worker comes back: it catches up and the alert resolves.
        restarted_at = time.monotonic()
        worker = start("worker-2", "worker")
        _wait_for(
            "AuditstreamConsumerLagHigh resolved for the worker group",
            lambda: (
                alive(exporter, worker)
                and not prometheus.alerts("AuditstreamConsumerLagHigh", group=group, topic=topic)
                and not prometheus.alerts("AuditstreamWorkerDown")
            ),
            timeout=150,
        )
        resolved_after = time.monotonic() - restarted_at
        assert "simulate: sent" in simulate.log_path.read_text()  # its status line
        assert f"{group}: " in exporter.log_path.read_text()  # its status line
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from exc
    print(
        f"lag alert fired {fired_after:.1f} s after the stop, resolved {resolved_after:.1f} s "
        "after the restart"
    )
