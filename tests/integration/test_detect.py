"""Detection through the real worker: scenarios in, exactly the expected alerts out."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta

from opensearchpy import OpenSearch

from pipeline.producer import AuditProducer
from pipeline.settings import Settings
from tests.factories import make_event
from tests.integration.processes import PipelineProcess
from tests.integration.test_end_to_end import _wait_for

VICTIM, ATTACKER, SPRAYER = "u-victim", "81.2.69.160", "89.160.20.112"


def _settings(pipeline_settings: Settings) -> Settings:
    suffix = pipeline_settings.topics.input.removeprefix("access-events")
    return pipeline_settings.model_copy(
        update={
            "worker": pipeline_settings.worker.model_copy(update={"session_timeout_s": 6.0}),
            "opensearch": pipeline_settings.opensearch.model_copy(
                update={
                    "events_index_prefix": f"audit-events{suffix}".lower(),
                    "alerts_index_prefix": f"audit-alerts{suffix}".lower(),
                }
            ),
        }
    )


def _failed_login(user: str, ip: str, at: datetime) -> dict:
    return make_event(
        actor={"id": user, "type": "user", "name": None, "tenant": "acme"},
        action="login",
        outcome="failure",
        reason="invalid_password",
        occurred_at=at,
        source={"ip": ip, "port": 40000, "user_agent": "Mozilla/5.0"},
        resource=None,
    )


def _scenarios(start: datetime) -> list[dict]:
    brute = [_failed_login(VICTIM, ATTACKER, start + timedelta(seconds=5 * n)) for n in range(10)]
    spray = [
        _failed_login(f"u-sprayed-{n}", SPRAYER, start + timedelta(seconds=30 * n))
        for n in range(6)
    ]
    return brute + spray


def _alerts(settings: Settings) -> dict[str, dict]:
    client = OpenSearch(settings.opensearch.url, timeout=30)
    alias = settings.opensearch.alerts_index_prefix
    if not client.indices.exists_alias(name=alias):
        return {}
    client.indices.refresh(index=alias)
    hits = client.search(index=alias, body={"size": 100})["hits"]["hits"]
    return {
        hit["_id"]: {
            **hit["_source"]["auditstream"]["alert"],
            "detector": hit["_source"]["rule"]["name"],
        }
        for hit in hits
    }


def _found(alerts: dict[str, dict]) -> set[tuple[str, str]]:
    return {(a["detector"], a["entity_id"]) for a in alerts.values()}


EXPECTED = {
    ("brute_force_user", VICTIM),
    ("brute_force_ip", ATTACKER),
    ("password_spraying", SPRAYER),
}


def _start(settings: Settings, tmp_path) -> dict[str, PipelineProcess]:
    return {
        "worker": PipelineProcess(settings, "worker", log_dir=tmp_path, name="worker").start(),
        "opensearch": PipelineProcess(
            settings, "sink", "opensearch", log_dir=tmp_path, name="sink-opensearch"
        ).start(),
    }


def _send(settings: Settings, events: list[dict]) -> None:
    with AuditProducer(settings) as producer:
        for event in events:
            producer.send(event)


def test_scenarios_raise_exactly_the_expected_alerts_and_a_restart_neither_repeats_nor_loses_them(
    pipeline_settings, tmp_path
):
    settings = _settings(pipeline_settings)
    start = datetime.now(tz=UTC) - timedelta(minutes=20)
    procs = _start(settings, tmp_path)
    try:
        _send(settings, _scenarios(start))
        _wait_for(lambda: _found(_alerts(settings)) >= EXPECTED, "the alerts", list(procs.values()))
        time.sleep(3)
        first = _alerts(settings)
        assert _found(first) == EXPECTED
        victim_id = next(k for k, a in first.items() if a["entity_id"] == VICTIM)

        # Kill the worker and lose its local state: it must come back from the changelogs.
        procs["worker"].kill()
        shutil.rmtree(settings.worker.data_dir, ignore_errors=True)
        more = [
            _failed_login(VICTIM, ATTACKER, start + timedelta(seconds=60 + n)) for n in range(3)
        ]
        _send(settings, more)
        procs["worker"].start()
        _wait_for(
            lambda: _alerts(settings)[victim_id]["event_count"] > first[victim_id]["event_count"],
            "the victim's alert to fold in the new failures",
            list(procs.values()),
        )
        time.sleep(3)
        after = _alerts(settings)
    finally:
        for proc in procs.values():
            proc.stop()
    # The same alerts (same ids), none new: the open alert took the later failures in.
    assert set(after) == set(first)
    assert after[victim_id]["revision"] > first[victim_id]["revision"]
