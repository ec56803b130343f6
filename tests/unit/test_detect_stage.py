"""The detection stage around the detectors: the entity cache, expiry sweeps, rule limits."""

import pytest

from pipeline.errors import ConfigError
from pipeline.stages.dedupe import DictStore
from pipeline.stages.detect.base import Verdict
from pipeline.stages.detect.rules import Rules
from pipeline.stages.detect.stage import DetectStage, EntityCache
from tests.detect_factories import fail, view


def _traffic():
    """Three users and their addresses: bursts that alert, successes, a late and a replayed one."""
    events = []
    for i in range(40):
        user = f"u{(i // 2) % 3}"  # two in a row, then the next user
        ip = f"203.0.113.{i % 5}"
        make = fail if i % 4 else view
        events.append((make(i * 2.0, actor_id=user, source_ip=ip), i + 1))
    events.append((fail(-7200, actor_id="u1"), 41))  # beyond the allowed lateness
    events.append((fail(100, actor_id="u2"), 12))  # a replay: at or below u2's watermark
    return events


def test_cached_states_give_the_same_alerts_and_stored_values_as_decoding_every_time():
    plain, cached = DetectStage(Rules()), DetectStage(Rules())
    stores = {name: DictStore() for name in ("plain", "cached")}
    cache = EntityCache(capacity=2)  # smaller than the entities: evictions happen too
    alerts = []
    for event, offset in _traffic():
        position = ("access-events", 0, offset)
        a = plain.observe(plain.users, stores["plain"], event, position)
        b = cached.observe(cached.users, stores["cached"], event, position, cache)
        assert (a.alerts, a.value, a.verdict) == (b.alerts, b.value, b.verdict)
        alerts += a.alerts
    assert stores["plain"].data == stores["cached"].data
    assert len(cache) == 2 and cache.hits > 0 and cache.misses > 0
    assert {a.detector for a in alerts} >= {"brute_force_user", "success_after_failures"}


def test_the_cache_keeps_the_most_recently_used_entities():
    cache = EntityCache(capacity=2)
    stage = DetectStage(Rules())
    store = DictStore()
    for offset, user in enumerate(["a", "b", "a", "c"], start=1):
        stage.observe(stage.users, store, fail(offset, actor_id=user), ("t", 0, offset), cache)
    assert cache.get(b"b") is None  # the least recently used went first
    assert cache.get(b"a") is not None and cache.get(b"c") is not None


def test_a_cleared_cache_reads_what_someone_else_wrote_to_the_store():
    stage = DetectStage(Rules())
    store, cache = DictStore(), EntityCache(16)
    for i in range(7):
        stage.observe(stage.users, store, fail(i), ("t", 0, i + 1), cache)
    # Faust recovers the partition from its changelog: the store now holds another
    # history (as if seven failures had been applied elsewhere up to offset 20).
    other = DictStore()
    for i in range(7):
        stage.observe(stage.users, other, fail(i), ("t", 0, 14 + i))
    store.data = dict(other.data)
    cache.clear()
    out = stage.observe(stage.users, store, fail(8), ("t", 0, 21), cache)
    assert out.verdict is Verdict.APPLIED
    assert [a.opened_by_offset for a in out.alerts] == [21]


def test_address_states_are_swept_after_the_address_retention_and_user_states_are_kept():
    stage = DetectStage(Rules())
    users, ips, cache = DictStore(), DictStore(), EntityCache(16)
    event = fail(0, actor_id="u1", source_ip="203.0.113.9")
    stage.observe(stage.users, users, event, ("t", 0, 1))
    stage.observe(stage.ips, ips, event, ("t", 0, 1), cache)
    three_days_later = fail(3 * 86400).occurred_us
    deleted, cursor = stage.sweep(stage.ips, ips, three_days_later, None, 100, cache)
    assert deleted == [b"203.0.113.9"] and ips.data == {} and len(cache) == 0 and cursor is None
    deleted, _ = stage.sweep(stage.users, users, three_days_later, None, 100)
    assert deleted == [] and set(users.data) == {b"u1"}


def test_a_sweep_scans_at_most_its_limit_and_resumes_where_it_stopped():
    stage = DetectStage(Rules())
    ips = DictStore()
    for n in range(5):
        stage.observe(stage.ips, ips, fail(0, source_ip=f"203.0.113.{n}"), ("t", 0, n + 1))
    later = fail(3 * 86400).occurred_us
    first, cursor = stage.sweep(stage.ips, ips, later, None, 3)
    assert len(first) == 3 and cursor is not None
    rest, cursor = stage.sweep(stage.ips, ips, later, cursor, 3)
    assert len(rest) == 2 and cursor is None and ips.data == {}


def test_user_retention_must_outlast_the_dormancy_it_detects():
    with pytest.raises(ValueError, match="dormant_days"):
        Rules.model_validate({"alerts": {"retention_days": 60}})
    rules = Rules.model_validate(
        {"alerts": {"retention_days": 60}, "detectors": {"dormant_account": {"enabled": False}}}
    )
    assert rules.alerts.retention_days == 60


def test_address_retention_shorter_than_the_address_windows_is_refused():
    rules = Rules.model_validate({"alerts": {"address_retention_days": 0.01}})
    with pytest.raises(ConfigError, match="address_retention_days"):
        DetectStage(rules)
