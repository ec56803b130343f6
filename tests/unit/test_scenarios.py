from datetime import UTC, datetime, timedelta

from pipeline.scenarios import KINDS, inject, scenarios
from pipeline.simulate import Simulator
from pipeline.stages.validate import validate

START = datetime(2026, 1, 19, tzinfo=UTC)


def test_same_seed_gives_the_same_scenarios() -> None:
    assert scenarios(3, START, timedelta(days=1)) == scenarios(3, START, timedelta(days=1))
    assert scenarios(3, START, timedelta(days=1)) != scenarios(4, START, timedelta(days=1))


def test_every_kind_is_injected_once_in_each_round_and_labelled() -> None:
    made = scenarios(1, START, timedelta(hours=2 * len(KINDS)))
    assert len(made) == 2 * len(KINDS)
    assert sorted(s.kind for s in made[: len(KINDS)]) == sorted(KINDS)
    for scenario in made:
        assert scenario.labels and scenario.events
        assert START + timedelta(hours=scenario.index) <= scenario.at
        assert scenario.at < START + timedelta(hours=scenario.index + 0.5)
        entities = {e["actor"]["id"] for e in scenario.events} | {
            e["source"]["ip"] for e in scenario.events
        }
        assert {label.entity for label in scenario.labels} <= entities


def test_scenario_events_are_valid_access_events() -> None:
    far_future_ms = int(datetime(2030, 1, 1, tzinfo=UTC).timestamp() * 1000)
    for scenario in scenarios(1, START, timedelta(hours=len(KINDS))):
        for event in scenario.events:
            validate(event, record_timestamp_ms=far_future_ms, max_future_skew_s=300)


def test_inject_merges_attacks_into_traffic_in_time_order() -> None:
    start = START - timedelta(hours=1)
    traffic = Simulator(1).events(count=20_000, rate=2, start=start, speed=1)
    attacks = scenarios(1, START, timedelta(hours=1))
    merged = list(inject(traffic, attacks, start=start, speed=1))
    injected = [e for _, e, s in merged if s is not None]
    assert len(injected) == sum(len(s.events) for s in attacks)
    walls = [w for w, _, _ in merged]
    assert walls == sorted(walls)


def test_simulate_attacks_injects_scenarios_and_writes_their_labels(tmp_path) -> None:
    import argparse
    import json

    from pipeline.simulate import _with_attacks

    start = START - timedelta(days=14)
    labels = tmp_path / "labels.jsonl"
    args = argparse.Namespace(
        seed=1, speed=60.0, attack_every=3600.0, attacks_after=14.0, labels=str(labels)
    )
    simulator = Simulator(1)
    traffic = simulator.events(count=None, rate=0.5, start=start, speed=60.0)
    stream = _with_attacks(args, simulator, start, traffic)
    events = []
    for offset_s, event in stream:
        if offset_s * 60 > timedelta(days=14, hours=3).total_seconds():
            break
        events.append(event)
    stream.close()
    written = [json.loads(line) for line in labels.read_text().splitlines()]
    assert [w["index"] for w in written] == [0, 1, 2]
    ids = {e["event_id"] for e in events}
    expected = scenarios(1, START, timedelta(hours=3), simulator=Simulator(1))
    for line, scenario in zip(written, expected, strict=True):
        assert line["kind"] == scenario.kind
        assert line["labels"] == [[x.detector, x.entity] for x in scenario.labels]
        assert set(line["event_ids"]) <= ids
