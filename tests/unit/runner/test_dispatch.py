"""Picking: the priorities' weights share the slots; a few more wait for critical jobs."""

from __future__ import annotations

import asyncio
from typing import Any

from shardq.clock import FakeClock
from shardq.config import Config
from shardq.ids import Snowflake
from shardq.observe import Metrics
from shardq.runner.backlog import Backlog
from shardq.runner.dispatch import Dispatcher
from shardq.runner.instruments import Instruments
from shardq.runner.outcomes import Outcomes

from .fakes import AllShards, FakeDriver, ref


def make(concurrency: int) -> tuple[Dispatcher, Backlog]:
    driver: Any = FakeDriver()
    clock = FakeClock()
    wake = asyncio.Event()
    instruments = Instruments(Metrics())
    config = Config(concurrency=concurrency)
    backlog = Backlog(config, driver, AllShards(), clock, instruments, wake, wake.set)
    backlog.windows.overflow = [False] * 4
    running: dict[int, Any] = {}
    cancel: set[int] = set()
    outcomes = Outcomes(backlog, instruments, running, cancel, wake.set, None)
    attempts: Any = None
    dispatch = Dispatcher(
        concurrency, driver, AllShards(), clock, Snowflake(1), backlog, outcomes, attempts,
        instruments, running, cancel, wake,
    )  # fmt: skip
    return dispatch, backlog


def test_the_last_slot_is_kept_for_a_critical_job() -> None:
    dispatch, backlog = make(16)
    backlog.offer([ref(i, priority=3) for i in range(1, 41)])
    picked = dispatch._pick(0)
    # 16 slots and 8 started ahead of them; one more, for critical jobs, is kept.
    assert len(picked) == 24 and dispatch.free == 1
    assert dispatch._pick(0) == []
    backlog.offer([ref(100, priority=0)])
    assert [r.id for r in dispatch._pick(0)] == [100]


def test_slots_are_shared_by_weight_when_every_priority_waits() -> None:
    dispatch, backlog = make(160)
    backlog.windows.size = 1000
    backlog.offer([ref(p * 1000 + i, priority=p) for p in range(4) for i in range(150)])
    picked = dispatch._pick(0)
    by_priority = [sum(1 for r in picked if r.priority == p) for p in range(4)]
    # 160 slots and 80 started ahead: 240 shared 4:3:2:1, and the 10 kept beyond them to
    # critical.
    assert by_priority == [106, 72, 48, 24]


async def test_a_key_runs_one_job_at_a_time() -> None:
    dispatch, backlog = make(16)
    await backlog.catch_up(0)  # no key has stored jobs
    backlog.offer([ref(1, key="k"), ref(2, key="k"), ref(3)])
    assert sorted(r.id for r in dispatch._pick(0)) == [1, 3]
    backlog.mailboxes.release("k", 0)
    assert [r.id for r in dispatch._pick(0)] == [2]
