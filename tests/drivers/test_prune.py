"""Pruning: finished jobs and dead letters older than their retention go, in batches."""

from __future__ import annotations

from shardq.drivers import Driver
from shardq.drivers.base import Outcome
from tests.rows import new_job

from .conftest import complete, start, states


async def test_finished_jobs_older_than_the_time_are_pruned(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 8)])
    await complete(driver, [1], at=3000)
    await complete(driver, [2], at=5000)
    await complete(driver, [3], at=6000)
    await start(driver, [4, 5, 6], now=2000)
    ends = [
        Outcome(4, 1, "failed", 3000, error="E", reason="MaxRetries", dlq_id=40),
        Outcome(5, 1, "cancelled", 3000),
        Outcome(6, 1, "retry", 3000, error="E", run_at=1500),
    ]
    await driver.advance(ends, [], "A", 3000)
    assert await driver.cancel_job(7, 3000) == "cancelled"
    await driver.insert_jobs([new_job(8), new_job(9)])
    await start(driver, [9], now=2000)

    # Finished before 5000: 1, 4, 5 and 7; the dead letter is kept (its time is 0).
    assert await driver.prune(5000, 0, 100) == 4
    assert await states(driver, range(1, 10)) == {
        1: "missing", 2: "complete", 3: "complete", 4: "missing", 5: "missing",
        6: "queued", 7: "missing", 8: "queued", 9: "processing",
    }  # fmt: skip
    assert await driver.get_dead_letter(40) is not None
    assert await driver.prune(5000, 3000, 100) == 0
    assert await driver.prune(5000, 3001, 100) == 1
    assert await driver.get_dead_letter(40) is None
    assert await driver.count_dead_letters() == 0


async def test_a_prune_deletes_at_most_its_limit_of_each(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 6)])
    await complete(driver, range(1, 6), at=3000)
    assert [await driver.prune(4000, 0, 2) for _ in range(4)] == [2, 2, 1, 0]
    assert await driver.count_by_state() == {}

    await driver.insert_jobs([new_job(i) for i in range(11, 16)])
    await start(driver, range(11, 16))
    failed = [
        Outcome(i, 1, "failed", 3000, error="E", reason="MaxRetries", dlq_id=i)
        for i in range(11, 16)
    ]
    await driver.advance(failed, [], "A", 3000)
    assert await driver.prune(0, 4000, 3) == 3
    assert await driver.count_dead_letters() == 2
    assert await driver.count_by_state() == {"failed": 5}
