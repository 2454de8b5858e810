"""The runner's gates: what storage refused is parked, and released when its reason ends."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence

from shardq.clock import FakeClock
from shardq.drivers.base import JobRef, LimitRecord, LimitUsage, RateSpec
from shardq.runner.gates import MAX_PARKED, SLOT_RECHECK_MS, Gates

from .fakes import ref


class FakeControls:
    """The stored controls, as a dict; ``throttles`` records the throttle writes."""

    def __init__(self) -> None:
        self.records: dict[str, LimitRecord] = {}
        self.keys: set[str] = set()
        self.throttles: list[tuple[str, int]] = []

    async def limits(self) -> list[LimitRecord]:
        return sorted(self.records.values(), key=lambda r: r.job_type)

    async def paused_keys(self) -> list[str]:
        return sorted(self.keys)

    async def throttle(self, job_type: str, until: int, now: int) -> None:
        self.throttles.append((job_type, until))

    async def put_limits(self, records: Sequence[LimitRecord], now: int) -> None:
        raise AssertionError("the gates never write limits")

    async def usage(self, job_types: Collection[str], now: int) -> dict[str, LimitUsage]:
        raise AssertionError("the gates never read usage")


class Driver:
    def __init__(self) -> None:
        self.controls = FakeControls()
        self.watches = 0

    async def keep_watching(self) -> None:
        self.watches += 1


def make() -> tuple[Gates, Driver, FakeClock, list[JobRef]]:
    driver, clock = Driver(), FakeClock()
    spilled: list[JobRef] = []
    gates = Gates(driver, clock, asyncio.Event(), spilled.append)  # type: ignore[arg-type]
    return gates, driver, clock, spilled


async def test_nothing_is_checked_while_no_control_exists() -> None:
    gates, _, clock, _ = make()
    await gates.load()
    assert not gates.active
    assert gates.limited([ref(1)]) == frozenset()
    assert gates.admits(ref(1), clock.now_ms())


async def test_a_type_refused_by_storage_is_parked_until_a_slot_frees() -> None:
    gates, driver, clock, _ = make()
    driver.controls.records["api"] = LimitRecord("api", concurrency=1)
    await gates.load()
    now = clock.now_ms()
    assert gates.limited([ref(1, type="api"), ref(2, type="other")]) == {"api"}
    gates.hold({"api": 0})
    assert not gates.admits(ref(1, type="api"), now)
    assert not gates.admits(ref(2, type="api"), now)
    assert gates.admits(ref(3, type="other"), now)
    assert gates.release(now) == ([], False)
    gates.slot_freed({"other"})
    assert gates.release(now) == ([], False)
    gates.slot_freed({"api"})
    released, _ = gates.release(now)
    assert [r.id for r in released] == [1, 2]  # in pick order


async def test_a_slot_wait_subscribes_to_finished_jobs_once_a_second_at_most() -> None:
    """A slot freed by a job finishing on another runner is heard of, not only re-checked."""
    gates, driver, clock, _ = make()
    driver.controls.records["api"] = LimitRecord("api", concurrency=1)
    await gates.load()
    gates.hold({"other": clock.now_ms() + 5000})  # a throttle waits for a time, not a slot
    await asyncio.sleep(0)
    assert driver.watches == 0
    gates.hold({"api": 0})
    gates.hold({"api": 0})
    await asyncio.sleep(0)
    assert driver.watches == 1
    await clock.advance(1.0)
    gates.hold({"api": 0})
    await asyncio.sleep(0)
    assert driver.watches == 2


async def test_a_slot_wait_is_rechecked_even_if_no_finish_is_heard() -> None:
    gates, driver, clock, _ = make()
    driver.controls.records["api"] = LimitRecord("api", concurrency=1)
    await gates.load()
    gates.hold({"api": 0})
    assert not gates.admits(ref(1, type="api"), clock.now_ms())
    assert gates.next_release() == clock.now_ms() + SLOT_RECHECK_MS
    await clock.advance(SLOT_RECHECK_MS / 1000)
    released, _ = gates.release(clock.now_ms())
    assert [r.id for r in released] == [1]
    assert gates.next_release() is None


async def test_a_rate_hold_ends_at_its_time_even_when_the_step_outlasted_it() -> None:
    gates, driver, clock, _ = make()
    driver.controls.records["api"] = LimitRecord("api", rate=RateSpec(10, 1.0))
    await gates.load()
    now = clock.now_ms()
    gates.hold({"api": now + 100})
    assert not gates.admits(ref(1, type="api"), now)
    await clock.advance(0.5)
    # Past already: due at once, not forgotten.
    assert gates.next_release() == now + 100
    released, _ = gates.release(clock.now_ms())
    assert [r.id for r in released] == [1]
    assert gates.next_release() is None


async def test_a_paused_type_and_key_hold_until_resumed_and_are_skipped_by_reads() -> None:
    gates, driver, clock, _ = make()
    driver.controls.records["mail"] = LimitRecord("mail", paused=True)
    driver.controls.keys.add("tenant:7")
    await gates.load()
    now = clock.now_ms()
    assert gates.excluded() == {"mail"}
    assert not gates.admits(ref(1, type="mail"), now)
    assert not gates.admits(ref(2, key="tenant:7"), now)
    assert gates.admits(ref(3, key="tenant:8"), now)
    assert gates.release(now) == ([], False)
    driver.controls.records["mail"] = LimitRecord("mail")
    driver.controls.keys.clear()
    await gates.load()
    released, skipped = gates.release(now)
    assert sorted(r.id for r in released) == [1, 2]
    assert skipped  # the reads skipped "mail": its jobs in storage are read again


async def test_a_full_park_leaves_jobs_to_storage() -> None:
    gates, driver, clock, spilled = make()
    driver.controls.records["mail"] = LimitRecord("mail", paused=True)
    await gates.load()
    now = clock.now_ms()
    for i in range(MAX_PARKED + 3):
        assert not gates.admits(ref(i + 1, type="mail"), now)
    assert [r.id for r in spilled] == [MAX_PARKED + 1, MAX_PARKED + 2, MAX_PARKED + 3]
    assert gates.parked_count() == MAX_PARKED


async def test_a_key_rate_starts_empty_after_a_shard_is_gained() -> None:
    gates, driver, clock, _ = make()
    driver.controls.records["poll"] = LimitRecord("poll", key_rate=RateSpec(10, 1.0, 1))
    await gates.load()
    gates.shards_gained({0})
    now = clock.now_ms()
    # Gained just now: the previous owner may have used the burst; nothing starts yet.
    assert not gates.admits(ref(1, key="k", type="poll"), now)
    assert gates.next_release() == now + 101  # one token's time (100 ms), rounded up
    await clock.advance(0.101)
    released, _ = gates.release(clock.now_ms())
    assert [r.id for r in released] == [1]
    assert gates.admits(released[0], clock.now_ms())
    assert not gates.admits(ref(2, key="k", type="poll"), clock.now_ms())
    # Another key, on a shard owned for long: a full bucket (burst 1: two at once).
    await clock.advance(10)
    assert gates.admits(ref(3, key="j", shard=5, type="poll"), clock.now_ms())
    assert gates.admits(ref(4, key="j", shard=5, type="poll"), clock.now_ms())
    assert not gates.admits(ref(5, key="j", shard=5, type="poll"), clock.now_ms())


async def test_a_throttled_type_is_held_here_and_written_for_everyone() -> None:
    gates, driver, clock, _ = make()
    await gates.load()
    now = clock.now_ms()
    gates.throttle("api", now + 30_000)
    assert not gates.admits(ref(1, type="api"), now)
    await asyncio.sleep(0)
    assert driver.controls.throttles == [("api", now + 30_000)]
    await clock.advance(30)
    released, _ = gates.release(clock.now_ms())
    assert [r.id for r in released] == [1]


async def test_lost_shards_take_their_parked_jobs_along() -> None:
    gates, driver, clock, _ = make()
    driver.controls.records["mail"] = LimitRecord("mail", paused=True)
    await gates.load()
    now = clock.now_ms()
    gates.admits(ref(1, type="mail", shard=1), now)
    gates.admits(ref(2, type="mail", shard=2), now)
    forgotten: list[int] = []
    gates.forget_shards({1}, lambda r: forgotten.append(r.id))
    assert forgotten == [1]
    assert gates.parked_count() == 1
