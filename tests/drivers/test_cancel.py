"""Cancelling a job: at once when queued, by request when running, never when finished."""

from __future__ import annotations

from shardq.drivers import Driver
from shardq.drivers.base import Outcome
from tests.rows import new_job

from .conftest import complete, start, states


async def test_a_queued_job_is_cancelled_at_once(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2, key="k"), new_job(3, run_at=9000)])
    for i in (1, 2, 3):
        assert await driver.cancel_job(i, 1500) == "cancelled"
    record = await driver.get_job(1)
    assert record is not None
    assert (record.state, record.finished_at, record.attempts) == ("cancelled", 1500, 0)
    assert record.history[-1][:2] == ("cancelled", 1500)
    assert await driver.load_refs([1, 2, 3]) == []
    assert await driver.load_ready(None, 2, 9000, 10) == []
    assert await driver.load_delayed(None, 0, 10) == []
    assert await driver.load_keys(None, 10) == []
    assert await driver.count_by_state() == {"cancelled": 3}
    assert await start(driver, [1, 2, 3]) == {}


async def test_a_running_job_is_flagged_and_recovery_cancels_it(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1)])
    await start(driver, [1])
    assert await driver.cancel_job(1, 2500) == "requested"
    assert await driver.cancel_job(1, 2600) == "requested"
    assert await states(driver, [1]) == {1: "processing"}
    assert await driver.recover(None, 3000) == 1
    assert await states(driver, [1]) == {1: "cancelled"}


async def test_a_flagged_job_still_ends_as_its_attempt_says(driver: Driver) -> None:
    """The flag is for the runner to act on; it does not fence the attempt out."""
    await driver.insert_jobs([new_job(1)])
    await start(driver, [1])
    assert await driver.cancel_job(1, 2500) == "requested"
    assert (await driver.advance([Outcome(1, 1, "complete", 3000)], [], "A", 3000)).written == [1]
    assert await states(driver, [1]) == {1: "complete"}


async def test_a_finished_job_stays_as_it_ended(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2)])
    await complete(driver, [1])
    assert await driver.cancel_job(2, 1500) == "cancelled"
    assert await driver.cancel_job(1, 4000) == "finished"
    assert await driver.cancel_job(2, 4000) == "finished"
    record = await driver.get_job(1)
    assert record is not None and (record.state, record.finished_at) == ("complete", 3000)
    record = await driver.get_job(2)
    assert record is not None and record.finished_at == 1500


async def test_a_missing_job_is_said_missing(driver: Driver) -> None:
    assert await driver.cancel_job(99, 1500) == "missing"
    assert await driver.count_by_state() == {}
