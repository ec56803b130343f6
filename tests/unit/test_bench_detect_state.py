"""``auditstream bench --detect-state``: the worst case stays bounded, and the report's figures."""

from datetime import timedelta

from pipeline.bench.detect_state import (
    KAFKA_MESSAGE_LIMIT,
    format_report,
    rate_for,
    worst_case,
)
from pipeline.stages.detect.quality import measure


def test_rate_for_spreads_the_events_over_the_simulated_days():
    assert rate_for(21 * 86_400) == 1.0
    assert rate_for(1_000_000) == 1_000_000 / (21 * 86_400)


def test_one_entity_under_a_long_mixed_attack_keeps_a_small_state_value():
    worst = worst_case(3_000)
    assert worst.alerts > 0
    assert [n for n, _, _ in worst.largest_by_tenth] == list(range(300, 3_001, 300))
    later = [max(u, a) for _, u, a in worst.largest_by_tenth[5:]]
    assert max(later) < KAFKA_MESSAGE_LIMIT / 20
    assert max(later) - min(later) < 2_000  # caps reached: it no longer grows with the attack


def test_the_report_gives_state_size_costs_and_the_worst_case():
    quality = measure(
        users=20, rate=0.01, warmup_days=1, measure_days=0.2, every=timedelta(hours=2)
    )
    text = format_report(
        {
            "quality": quality,
            "disk_mb": 1.5,
            "costs": {"cached": 40.0, "decoded every event": 70.0, "enrich": 20.0},
            "worst": worst_case(100),
        }
    )
    assert f"{quality.entities:,} entities" in text
    assert "on disk after flush and compaction: 1.5 MB" in text
    assert "with the entity cache      40.0 µs" in text
    assert "of Kafka's 1 MB limit" in text
