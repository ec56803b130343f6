"""Retention without services: index periods, the window, the archive check, the ISM policies."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import exceptions as os_exc

from pipeline import retention
from pipeline.retention import IndexPeriod, RetentionError, parse_index, period_expired
from pipeline.retention_ism import install_ism, load_ism_policy, render_ism_policy
from pipeline.settings import Settings
from pipeline.sinks.archive import encode_object
from pipeline.sinks.base import Record
from pipeline.sinks.storage import FilesystemStore

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def test_day_and_month_index_names_give_their_period() -> None:
    day = parse_index("audit-events-2025.03.01", "audit-events", "events")
    assert day == IndexPeriod(
        "audit-events-2025.03.01",
        "events",
        datetime(2025, 3, 1, tzinfo=UTC),
        datetime(2025, 3, 2, tzinfo=UTC),
    )
    december = parse_index("audit-alerts-2024.12", "audit-alerts", "alerts")
    assert december is not None
    assert december.end == datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "name",
    [
        "audit-events-t1-2025.03.01",  # another prefix's index
        "audit-events-2025.02.30",  # not a date
        "audit-events-2025.03.01-restored",
        "audit-events",
        "audit-events-2025",
        "audit-restore-2025.03.01",
    ],
)
def test_names_that_are_not_exactly_prefix_and_date_are_never_ours(name: str) -> None:
    assert parse_index(name, "audit-events", "events") is None


def test_an_index_expires_only_when_its_whole_period_is_before_the_window() -> None:
    cut = NOW - timedelta(days=90)  # 2025-03-17T12:00
    before = parse_index("audit-events-2025.03.16", "audit-events", "events")
    straddles = parse_index("audit-events-2025.03.17", "audit-events", "events")
    assert before is not None and straddles is not None
    assert before.end <= cut and period_expired(before, NOW, 90)
    assert straddles.start < cut < straddles.end
    assert not period_expired(straddles, NOW, 90)  # may hold an in-window event
    month = parse_index("audit-alerts-2024.05", "audit-alerts", "alerts")
    assert month is not None
    assert not period_expired(month, NOW, 400)  # May 2024 ends inside 400 days
    old = parse_index("audit-alerts-2024.04", "audit-alerts", "alerts")
    assert old is not None and period_expired(old, datetime(2025, 6, 6, tzinfo=UTC), 400)


def _store_with(tmp_path: Path, topic: str, partition: int, last: int) -> FilesystemStore:
    store = FilesystemStore(tmp_path / "archive")
    records = [
        Record(topic, partition, o, 2, 1_700_000_000_000 + o, None, b"x") for o in range(last + 1)
    ]
    data, info = encode_object(records, 0)
    assert store.put_if_absent(info.key, data)
    return store


def test_alerts_are_archived_when_every_needed_offset_is_below_the_archive_head(
    tmp_path: Path,
) -> None:
    store = _store_with(tmp_path, "access-alerts", 0, 9)
    assert retention._covers(store, "access-alerts", {0: 10}).ok
    short = retention._covers(store, "access-alerts", {0: 11, 1: 0})
    assert not short.ok and "access-alerts[0]" in short.detail
    missing = retention._covers(store, "access-alerts", {1: 1})
    assert not missing.ok and "access-alerts[1] archived below 0" in missing.detail


# -- ISM ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["events", "alerts", "restore"])
def test_shipped_ism_policies_delete_after_a_delay_and_nothing_else(kind: Any) -> None:
    policy = load_ism_policy(kind)["policy"]
    assert set(policy) <= {"description", "default_state", "states", "ism_template"}
    states = {s["name"]: s for s in policy["states"]}
    assert policy["default_state"] in states
    first = states[policy["default_state"]]
    assert first["actions"] == []
    (transition,) = first["transitions"]
    assert transition["conditions"]["min_index_age"].endswith("d")
    target = states[transition["state_name"]]
    assert [next(k for k in a if k != "retry") for a in target["actions"]] == ["delete"]
    assert policy["ism_template"][0]["index_patterns"] == [f"audit-{kind}-*"]


def test_rendered_ism_policy_never_deletes_before_the_name_based_rule() -> None:
    body = render_ism_policy(load_ism_policy("events"), "it-events", 90, 1)
    policy = body["policy"]
    assert policy["ism_template"][0]["index_patterns"] == ["it-events-*"]
    ages = [
        t["conditions"]["min_index_age"] for s in policy["states"] for t in s.get("transitions", [])
    ]
    # created at the latest a day before the period ends: 90 + 1 + 1 days from creation
    assert ages == ["92d"]
    alerts = render_ism_policy(load_ism_policy("alerts"), "audit-alerts", 400, 31)
    assert alerts["policy"]["states"][0]["transitions"][0]["conditions"]["min_index_age"] == "432d"
    # restore indices age from the restore, which is their creation: no index period to wait
    restore = render_ism_policy(load_ism_policy("restore"), "audit-restore", 30, 0)
    assert restore["policy"]["states"][0]["transitions"][0]["conditions"]["min_index_age"] == "31d"


class _Transport:
    def __init__(self, existing: bool, fail_put: bool = False) -> None:
        self.calls: list[tuple[str, str, dict[str, Any], Any]] = []
        self.existing = existing
        self.fail_put = fail_put

    def perform_request(
        self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None
    ) -> dict[str, Any]:
        self.calls.append((method, path, params or {}, body))
        if method == "GET":
            if not self.existing:
                raise os_exc.NotFoundError(404, "not_found", {})
            return {"_seq_no": 7, "_primary_term": 2, "policy": {}}
        if self.fail_put:
            raise os_exc.TransportError(400, "no handler found for uri", {})
        return {"_id": path.rsplit("/", 1)[1]}


class _Client:
    def __init__(self, transport: _Transport) -> None:
        self.transport = transport


def test_install_ism_puts_every_policy_and_updates_in_place() -> None:
    settings = Settings()
    transport = _Transport(existing=True)
    ids = install_ism(_Client(transport), settings)  # type: ignore[arg-type]
    assert ids == ["audit-events-retention", "audit-alerts-retention", "audit-restore-retention"]
    puts = [c for c in transport.calls if c[0] == "PUT"]
    assert [p[1] for p in puts] == [f"/_plugins/_ism/policies/{i}" for i in ids]
    assert puts[0][2] == {"if_seq_no": 7, "if_primary_term": 2}
    fresh = _Transport(existing=False)
    install_ism(_Client(fresh), settings)  # type: ignore[arg-type]
    assert [c[2] for c in fresh.calls if c[0] == "PUT"] == [{}, {}, {}]
    restore = next(
        c[3] for c in fresh.calls if c[0] == "PUT" and c[1].endswith("audit-restore-retention")
    )
    assert restore["policy"]["ism_template"][0]["index_patterns"] == ["audit-restore-*"]
    assert restore["policy"]["states"][0]["transitions"][0]["conditions"] == {
        "min_index_age": "31d"
    }


def test_install_ism_without_the_plugin_says_what_to_do() -> None:
    with pytest.raises(RetentionError, match="Index State Management plugin"):
        install_ism(_Client(_Transport(existing=False, fail_put=True)), Settings())  # type: ignore[arg-type]


def test_retention_apply_is_a_cli_command() -> None:
    parser = argparse.ArgumentParser()
    retention.register(parser.add_subparsers())
    args = parser.parse_args(["retention", "apply", "--dry-run", "--now", "2025-06-15T12:00:00Z"])
    assert args.func is retention.run_apply and args.dry_run and args.now == NOW
    assert not args.archive
    assert parser.parse_args(["retention", "apply", "--archive"]).archive
