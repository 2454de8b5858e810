from __future__ import annotations

import pytest

from shardq.clock import SYSTEM_CLOCK, FakeClock
from shardq.ids import EPOCH_MS, MAX_SEQUENCE, Snowflake, machine_of, timestamp_ms


def test_ids_strictly_increase_and_carry_time_and_machine() -> None:
    gen = Snowflake(machine_id=513, clock=lambda: EPOCH_MS + 1_000)
    ids = [gen.next() for _ in range(10)]
    assert ids == sorted(set(ids))
    assert all(timestamp_ms(i) == EPOCH_MS + 1_000 for i in ids)
    assert all(machine_of(i) == 513 for i in ids)


def test_sequence_overflow_moves_to_the_next_millisecond() -> None:
    gen = Snowflake(machine_id=1, clock=lambda: EPOCH_MS + 50)
    ids = gen.take(MAX_SEQUENCE + 1 + 10)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert timestamp_ms(ids[MAX_SEQUENCE]) == EPOCH_MS + 50
    assert timestamp_ms(ids[MAX_SEQUENCE + 1]) == EPOCH_MS + 51


def test_clock_going_backwards_never_repeats_an_id() -> None:
    now = [EPOCH_MS + 10_000]
    gen = Snowflake(machine_id=7, clock=lambda: now[0])
    a = gen.next()
    now[0] -= 5_000
    b = gen.next()
    assert b > a


def test_generators_on_different_machines_never_collide() -> None:
    clock = lambda: EPOCH_MS + 3  # noqa: E731
    a = Snowflake(1, clock).take(100)
    b = Snowflake(2, clock).take(100)
    assert not set(a) & set(b)


@pytest.mark.parametrize("bad", [-1, 1024, 5000])
def test_machine_id_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="machine_id"):
        Snowflake(bad)


def test_by_default_ids_carry_the_system_clock_time() -> None:
    before = SYSTEM_CLOCK.now_ms()
    made = Snowflake(3).next()
    after = SYSTEM_CLOCK.now_ms()
    assert before <= timestamp_ms(made) <= after


def test_ids_follow_a_fake_clock() -> None:
    clock = FakeClock(now_ms=EPOCH_MS + 86_400_000)
    assert timestamp_ms(Snowflake(3, clock.now_ms).next()) == EPOCH_MS + 86_400_000
