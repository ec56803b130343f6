"""The evidence report's aggregation and rendering, without services or a browser."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pipeline.integrity.report import aggregate, is_denied, newest_alerts, render, volume_chart
from pipeline.integrity.verify import Problem, VerifyReport
from pipeline.settings import Settings
from tests.factories import make_event

DAY = datetime(2026, 3, 2, 10, tzinfo=UTC)


def enriched(**overrides: Any) -> dict[str, Any]:
    """A decoded EnrichedEvent (the parts the report reads)."""
    return {"event": make_event(**overrides), "content_hash": "h"}


def actor(actor_id: str) -> dict[str, Any]:
    return {"id": actor_id, "type": "user", "name": actor_id, "tenant": "acme"}


def alert(alert_id: str, revision: int, severity: str = "high", **kw: Any) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "revision": revision,
        "detector": "brute_force",
        "severity": severity,
        "entity_type": "user",
        "entity_id": "u1",
        "summary": f"{alert_id} r{revision}",
        "first_seen": kw.get("first_seen", DAY),
        "last_seen": kw.get("last_seen", DAY + timedelta(minutes=revision)),
        "event_count": revision * 5,
    }


def sample() -> list[dict[str, Any]]:
    events = [
        enriched(occurred_at=DAY, actor=actor("u1")),
        enriched(occurred_at=DAY, actor=actor("u1"), outcome="failure", reason="invalid_password"),
        enriched(
            occurred_at=DAY + timedelta(days=2),
            actor=actor("u2"),
            action="read",
            outcome="failure",
            reason="permission_denied",
            resource={"type": "table", "id": "cards", "name": "Cards"},
        ),
        enriched(occurred_at=DAY + timedelta(days=2), actor=actor("u3"), action="grant"),
    ]
    return [*events, events[1]]  # an at-least-once repeat of the second


def test_aggregate_counts_each_event_once_with_failures_and_denials() -> None:
    data = aggregate(sample())
    assert (data.events, data.repeats, data.failures, data.denied) == (4, 1, 2, 1)
    assert data.failure_reasons == [("invalid_password", 1, False), ("permission_denied", 1, True)]
    assert data.top_actors == [("u1", 2, 1), ("u2", 1, 1), ("u3", 1, 0)]
    assert data.top_resources[0] == ("application:portal (Portal)", 3, 1)
    assert ("table:cards (Cards)", 1, 1) in data.top_resources
    assert data.privileged == [("grant", 1, 0)]
    assert [a.reason for a in data.recent_failures] == ["permission_denied", "invalid_password"]


def test_volume_per_day_covers_every_day_of_the_window_in_utc() -> None:
    data = aggregate(sample())
    assert data.per_day == [
        (date(2026, 3, 2), 2, 1),
        (date(2026, 3, 3), 0, 0),
        (date(2026, 3, 4), 2, 1),
    ]
    windowed = aggregate(
        sample(), start=DAY - timedelta(days=1), end=DAY + timedelta(days=1, hours=1)
    )
    assert windowed.events == 2
    assert [d for d, _, _ in windowed.per_day] == [
        date(2026, 3, 1),
        date(2026, 3, 2),
        date(2026, 3, 3),
    ]


def test_denied_means_an_authorization_decision() -> None:
    assert is_denied("permission_denied") and is_denied("Forbidden") and is_denied("unauthorized")
    assert not is_denied("invalid_password") and not is_denied(None)


def test_alerts_show_their_newest_revision_most_severe_first() -> None:
    rows = newest_alerts(
        [alert("a", 1), alert("a", 3), alert("a", 2), alert("b", 1, "critical")], None, None
    )
    assert [(r.alert_id, r.revision) for r in rows] == [("b", 1), ("a", 3)]
    old = alert("c", 1, last_seen=DAY - timedelta(days=9), first_seen=DAY - timedelta(days=9))
    assert newest_alerts([old], DAY - timedelta(days=1), None) == []


def bar_heights(svg: str, cls: str = "bar") -> list[float]:
    return [float(h) for h in re.findall(rf'<rect class="{cls}" [^>]*height="([0-9.]+)"', svg)]


def test_the_chart_draws_one_bar_per_day_with_events() -> None:
    svg = volume_chart(
        [(date(2026, 3, 1), 10, 2), (date(2026, 3, 2), 0, 0), (date(2026, 3, 3), 4, 0)]
    )
    heights = bar_heights(svg)
    assert len(heights) == 2 and all(h > 0 for h in heights)
    assert heights[0] > heights[1]
    assert len(bar_heights(svg, "bar-failed")) == 1
    assert "2026-03-01: 10 events, 2 failed" in svg
    assert "No events" in volume_chart([])


def test_the_report_is_self_contained_and_escapes_what_it_shows() -> None:
    events = [*sample(), enriched(occurred_at=DAY, actor=actor("<script>alert(1)</script>"))]
    page = render(aggregate(events, [alert("a", 1)]), None, Settings())
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"(src|href)\s*=", page)
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert "Not verified: no key given." in page
    for control in ("PCI DSS 10.2", "PCI DSS 10.3", "PCI DSS 10.5", "SOC 2 CC6", "SOC 2 CC7"):
        assert control in page
    assert "$" not in page.replace("$$", "")  # every placeholder was filled


def test_the_report_shows_the_verify_summary_or_its_problems() -> None:
    data = aggregate(sample())
    good = VerifyReport(digests_total=3, digests_valid=3, objects_total=11, objects_valid=11)
    assert "Verified: 3/3 digests valid, 11/11 objects valid, 0 gaps." in render(
        data, good, Settings()
    )
    bad = VerifyReport(digests_total=3, digests_valid=3, objects_total=11, objects_valid=10)
    bad.problems.append(Problem("modified_object", "access-events/00000/1.avro", "hash differs"))
    page = render(data, bad, Settings())
    assert "FAILED: 3/3 digests valid, 10/11 objects valid, 0 gaps" in page
    assert "modified_object" in page
