from pipeline.stages.dedupe import Deduper, DictStore, Sighting, Verdict

DAY_US = 86_400 * 1_000_000


def sighting(offset: int, *, hash_: str = "h1", partition: int = 0, day: float = 10) -> Sighting:
    return Sighting(hash_, partition, offset, int(day * DAY_US))


def test_first_sighting_is_new_and_remembered():
    store, deduper = DictStore(), Deduper(window_s=7 * 86400, lateness_s=3600)
    decision = deduper.decide(store, "e1", sighting(5))
    assert decision.verdict is Verdict.NEW
    assert Sighting.decode(store.data[b"e1"]) == sighting(5)


def test_same_offset_again_is_a_replay_processed_again():
    store, deduper = DictStore(), Deduper(7 * 86400, 3600)
    deduper.decide(store, "e1", sighting(5))
    assert deduper.decide(store, "e1", sighting(5)).verdict is Verdict.REPLAY


def test_copy_at_another_offset_with_same_content_is_a_duplicate_even_right_after():
    store, deduper = DictStore(), Deduper(7 * 86400, 3600)
    deduper.decide(store, "e1", sighting(5))
    decision = deduper.decide(store, "e1", sighting(6))
    assert decision.verdict is Verdict.DUPLICATE
    assert decision.first == sighting(5)


def test_copy_with_other_content_is_a_conflict_and_keeps_the_first():
    store, deduper = DictStore(), Deduper(7 * 86400, 3600)
    deduper.decide(store, "e1", sighting(5))
    assert deduper.decide(store, "e1", sighting(9, hash_="h2")).verdict is Verdict.CONFLICT
    assert Sighting.decode(store.data[b"e1"]).content_hash == "h1"


def test_an_id_older_than_the_window_counts_as_new_again():
    store, deduper = DictStore(), Deduper(7 * 86400, 3600)
    deduper.decide(store, "e1", sighting(5, day=1))
    deduper.decide(store, "other", sighting(6, day=9))  # moves the watermark on
    assert deduper.decide(store, "e1", sighting(7, day=9)).verdict is Verdict.NEW


def test_within_the_window_plus_lateness_it_is_still_a_duplicate():
    store, deduper = DictStore(), Deduper(7 * 86400, 3600)
    deduper.decide(store, "e1", sighting(5, day=1))
    deduper.decide(store, "other", sighting(6, day=8.02))  # 7 days + 28 min later
    assert deduper.decide(store, "e1", sighting(7, day=1)).verdict is Verdict.DUPLICATE


def test_sweep_deletes_only_expired_entries_in_bounded_steps():
    store, deduper = DictStore(), Deduper(7 * 86400, 3600)
    for n in range(10):
        deduper.decide(store, f"old{n}", sighting(n, day=1))
    for n in range(5):
        deduper.decide(store, f"new{n}", sighting(100 + n, day=9))
    # Keys sort "new0".."new4", "old0".."old9"; each sweep reads at most 6 of them.
    assert deduper.sweep(store, 0, limit=6) == [b"old0"]
    assert deduper.sweep(store, 0, limit=6) == [f"old{n}".encode() for n in range(1, 7)]
    assert deduper.sweep(store, 0, limit=6) == [b"old7", b"old8", b"old9"]
    assert sorted(store.data) == [f"new{n}".encode() for n in range(5)]
    assert deduper.sweep(store, 0, limit=6) == []  # wrapped around: nothing left to expire


def test_partitions_keep_their_own_watermarks():
    store_a, store_b, deduper = DictStore(), DictStore(), Deduper(7 * 86400, 3600)
    deduper.decide(store_a, "e1", sighting(1, partition=0, day=1))
    deduper.decide(store_b, "x", sighting(1, partition=1, day=30))
    # Partition 1's late clock does not expire partition 0's entry.
    assert deduper.decide(store_a, "e1", sighting(2, partition=0, day=1)).verdict is (
        Verdict.DUPLICATE
    )
