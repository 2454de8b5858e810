"""The scheduler: a schedule's ticks fire on the injected clock, and the jobs it submits are
counted through the runner's instruments (a tick fired twice is one job, counted once)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

from shardq.clock import FakeClock
from shardq.config import Config
from shardq.drivers.base import AllShards, FiredTick, JobRef, NewJob, ScheduleRecord
from shardq.ids import Snowflake
from shardq.observe import Metrics
from shardq.runner.instruments import Instruments
from shardq.runner.schedules import Scheduler
from shardq.schedules import spec_of

EVERY_MS = 60_000


class _Schedules:
    """One stored schedule, firing every minute."""

    def __init__(self) -> None:
        self.record = ScheduleRecord(
            "minutely", 0, "tick", None, EVERY_MS, "UTC", "{}", 2, "latest", "allow", None
        )
        self.recorded: list[FiredTick] = []

    async def put(self, schedules: Sequence[ScheduleRecord], now: int, **_: Any) -> list[str]:
        return []

    async def load(self, shards: Collection[int] | None) -> list[ScheduleRecord]:
        return [self.record]

    async def unfinished(self, job_ids: Collection[int]) -> set[int]:
        return set()

    async def fired(self, ticks: Sequence[FiredTick]) -> None:
        self.recorded += ticks


class _Driver:
    """Inserts jobs; a job whose dedupe key was inserted before is a duplicate."""

    def __init__(self) -> None:
        self.schedules = _Schedules()
        self.held: dict[str, int] = {}

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> list[tuple[int, bool]]:
        out = []
        for job in jobs:
            assert job.dedupe_key is not None
            holder = self.held.setdefault(job.dedupe_key, job.id)
            out.append((holder, holder != job.id))
        return out

    def unreachable(self, error: BaseException) -> bool:
        return False


def _enqueued(metrics: Metrics) -> float:
    return sum(
        s.value
        for family in metrics.enqueued.collect()
        for s in family.samples
        if s.name.endswith("_total") and s.labels == {"type": "tick", "priority": "normal"}
    )


async def test_the_jobs_of_fired_ticks_are_counted_once_each() -> None:
    clock = FakeClock(now_ms=EVERY_MS * 1_000_000)
    metrics = Metrics()
    driver: Any = _Driver()
    driver.schedules.record.after_ms = clock.now_ms()  # every tick until now is handled
    offered: list[JobRef] = []
    scheduler = Scheduler(
        driver, Config(), clock, Snowflake(1, clock.now_ms), AllShards("me"), {}, Instruments(metrics),
        offered.extend,
    )  # fmt: skip
    await scheduler.start()
    try:
        for _ in range(5):
            await asyncio.sleep(0)  # the first read arms the schedule
        assert scheduler.armed == 1
        await clock.advance(60)
        first = clock.now_ms()
        assert [(t.tick, t.job_id) for t in driver.schedules.recorded if t.tick] == [
            (first, offered[0].id)
        ]
        assert len(offered) == 1 and _enqueued(metrics) == 1
        # The next tick's job exists already (another runner fired it across a hand-over):
        # the tick answers that job, and no job is new here.
        spec = spec_of(driver.schedules.record)
        driver.held[spec.dedupe_key(first + EVERY_MS)] = 12345
        await clock.advance(60)
        assert driver.schedules.recorded[-1].job_id == 12345
        assert len(offered) == 1 and _enqueued(metrics) == 1
        await clock.advance(60)
        assert len(offered) == 2 and _enqueued(metrics) == 2
    finally:
        await scheduler.stop()
