"""What the API reads: one job, filtered lists newest first, and counts."""

from __future__ import annotations

from typing import Any

from shardq.drivers import Driver
from shardq.drivers.base import JobFilter, JobRecord
from tests.rows import new_job

from .conftest import complete, ids, start


async def test_get_job_returns_everything_stored(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1, shard=2, key="k", dedupe="d", priority=0)])
    await complete(driver, [1], at=3000)
    assert await driver.get_job(1) == JobRecord(
        id=1, type="t", payload='{"n": 1}', priority=0, state="complete", key="k", shard=2,
        dedupe_key="d", max_attempts=3, attempts=1, timeout=None, duration="short",
        batch_id=None, run_at=1000, created_at=1000, finished_at=3000, result=None, error=None,
        history=[("queued", 1000, None), ("processing", 2500, None), ("complete", 3000, None)],
    )  # fmt: skip
    assert await driver.get_job(2) is None


async def test_list_jobs_narrows_by_every_filter_newest_first(driver: Driver) -> None:
    await driver.insert_jobs(
        [
            new_job(1, type="a", priority=0, key="k", created_at=1000),
            new_job(2, type="b", priority=1, created_at=2000),
            new_job(3, type="a", priority=1, key="k", created_at=3000),
            new_job(4, type="b", priority=2, created_at=4000),
            new_job(5, type="a", priority=2, created_at=5000),
        ]
    )
    await start(driver, [4])
    await complete(driver, [5])

    async def listed(**fields: Any) -> list[int]:
        return ids(await driver.list_jobs(JobFilter(**fields)))

    assert await listed() == [5, 4, 3, 2, 1]
    assert await listed(state="queued") == [3, 2, 1]
    assert await listed(state="complete") == [5]
    assert await listed(type="a") == [5, 3, 1]
    assert await listed(priority=1) == [3, 2]
    assert await listed(key="k") == [3, 1]
    assert await listed(created_after=3000) == [5, 4, 3]
    assert await listed(created_before=3000) == [2, 1]
    assert await listed(limit=2) == [5, 4]
    assert await listed(before_id=4) == [3, 2, 1]
    assert await listed(before_id=4, limit=1) == [3]
    assert await listed(type="a", state="queued", created_after=2000) == [3]
    assert await listed(type="none") == []


async def test_jobs_are_counted_by_state_and_queued_ones_by_priority(driver: Driver) -> None:
    assert await driver.count_by_state() == {}
    assert await driver.count_queued_by_priority() == {}
    await driver.insert_jobs(
        [new_job(i, priority=i % 3, key="k" if i == 4 else None) for i in range(1, 10)]
    )
    await start(driver, [1])
    await complete(driver, [2, 3])
    await driver.cancel_job(5, 1500)
    assert await driver.count_by_state() == {
        "processing": 1, "complete": 2, "cancelled": 1, "queued": 5,
    }  # fmt: skip
    # Queued: 4 (1), 6 (0), 7 (1), 8 (2), 9 (0).
    assert await driver.count_queued_by_priority() == {0: 2, 1: 2, 2: 1}
