from __future__ import annotations

from collections import Counter

from shardq._internal.capacity import WeightedPicker


def test_busy_priorities_share_starts_by_weight() -> None:
    picker = WeightedPicker([4, 3, 2, 1])
    picks = Counter(picker.pick([True] * 4) for _ in range(10_000))
    assert [round(picks[i] / 1000) for i in range(4)] == [4, 3, 2, 1]


def test_idle_capacity_is_lent_to_the_others() -> None:
    picker = WeightedPicker([4, 3, 2, 1])
    assert {picker.pick([False, False, False, True]) for _ in range(100)} == {3}
    assert picker.pick([False] * 4) == -1


def test_a_newly_busy_priority_starts_at_once_without_banked_credit() -> None:
    picker = WeightedPicker([4, 3, 2, 1])
    for _ in range(1_000):
        picker.pick([False, False, False, True])
    assert picker.pick([True, False, False, True]) == 0
    # No burst: after its first start it shares 4:1 again instead of taking 1,000 in a row.
    picks = Counter(picker.pick([True, False, False, True]) for _ in range(50))
    assert 35 <= picks[0] <= 45
