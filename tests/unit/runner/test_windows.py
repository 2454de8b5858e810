"""Windows: bounded in memory, refilled from storage oldest first, delayed jobs promoted."""

from __future__ import annotations

import asyncio
from typing import Any

from shardq.clock import FakeClock
from shardq.runner.windows import Windows

from .fakes import FakeDriver, ref


def make(driver: FakeDriver, size: int = 4) -> tuple[Windows, set[int], FakeClock]:
    known: set[int] = set()
    clock = FakeClock(now_ms=10_000)
    drv: Any = driver
    return Windows(size, known, drv, clock, WAKE), known, clock


#: The dispatch loop's wake-up, set by a reload when it is done.
WAKE = asyncio.Event()


def ids(windows: Windows, p: int = 2) -> list[int]:
    return [r.id for r in windows.ready[p]]


async def test_a_full_window_leaves_later_jobs_in_storage_and_reloads_oldest_first() -> None:
    driver = FakeDriver()
    windows, known, clock = make(driver)
    windows.overflow = [False] * 4  # storage known empty
    jobs = [ref(i) for i in range(1, 8)]
    driver.add(*jobs)
    placed = [windows.place(r, clock.now_ms()) for r in jobs]
    assert placed == [True] * 4 + [False] * 3
    assert ids(windows) == [1, 2, 3, 4] and known == {1, 2, 3, 4}
    # A later arrival waits too: older jobs of its priority are in storage.
    assert windows.place(ref(9), clock.now_ms()) is False
    for r in list(windows.ready[2])[:4]:
        windows.ready[2].popleft()
        windows.taken(r)
        driver.queued.pop(r.id)
        known.discard(r.id)

    def offer(refs: Any) -> None:
        for r in refs:
            windows.place(r, clock.now_ms())

    WAKE.clear()
    await windows.catch_up(None, clock.now_ms(), offer)
    assert windows.loading[2]
    await asyncio.wait_for(WAKE.wait(), timeout=5)
    assert not windows.loading[2]
    assert ids(windows) == [5, 6, 7]


async def test_delayed_jobs_become_ready_when_due() -> None:
    driver = FakeDriver()
    windows, _, clock = make(driver)
    now = clock.now_ms()
    assert windows.place(ref(1, run_at=now + 5000), now)
    assert windows.place(ref(2, run_at=now + 1000), now)
    assert windows.next_due() == now + 1000
    windows.promote_due(now + 999, lambda r: True)
    assert ids(windows) == []
    windows.promote_due(now + 1000, lambda r: True)
    assert ids(windows) == [2] and windows.next_due() == now + 5000


async def test_forgetting_shards_drops_their_refs_only() -> None:
    windows, known, clock = make(FakeDriver())
    windows.overflow = [False] * 4
    now = clock.now_ms()
    for r in (ref(1, shard=1), ref(2, shard=2), ref(3, shard=1, run_at=now + 10)):
        windows.place(r, now)
    windows.forget_shards({1})
    assert ids(windows) == [2] and known == {2} and windows.next_due() is None
    assert windows.unkeyed[2] == 1
