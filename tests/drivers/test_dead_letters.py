"""Dead letters: listed newest first by pages, replayed once each."""

from __future__ import annotations

from shardq.drivers import Driver
from shardq.drivers.base import Outcome
from tests.rows import new_job

from .conftest import ids, start, states


async def fail(driver: Driver, job_ids: list[int], at: int = 3000) -> None:
    """Start ``job_ids`` and fail them for good; dead letter ``10 * id`` for each."""
    await start(driver, job_ids, now=at - 500)
    failed = [
        Outcome(i, 1, "failed", at, error=f"E{i}", reason="MaxRetries", dlq_id=10 * i)
        for i in job_ids
    ]
    assert sorted((await driver.advance(failed, [], "A", at)).written) == sorted(job_ids)


async def test_dead_letters_are_listed_newest_first_by_pages(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in (1, 2, 3, 4)])
    await fail(driver, [2, 1])
    await fail(driver, [3], at=3500)
    assert ids(await driver.dead_letters(10)) == [30, 20, 10]
    assert ids(await driver.dead_letters(2)) == [30, 20]
    assert ids(await driver.dead_letters(2, before_id=20)) == [10]
    assert await driver.dead_letters(2, before_id=10) == []
    assert await driver.count_dead_letters() == 3


async def test_one_dead_letter_is_got_by_its_id(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1, key="k")])
    await fail(driver, [1])
    letter = await driver.get_dead_letter(10)
    assert letter is not None
    assert (letter.id, letter.job_id, letter.key, letter.error) == (10, 1, "k", "E1")
    assert (letter.failed_at, letter.replayed_at, letter.replay_job_id) == (3000, None, None)
    assert await driver.get_dead_letter(11) is None


async def test_a_dead_letter_is_replayed_once(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2)])
    await fail(driver, [1, 2])
    assert await driver.replay(10, new_job(100, key="k", created_at=5000)) == "replayed"
    assert [(r.id, r.key) for r in await driver.load_refs([100])] == [(100, "k")]
    letter = await driver.get_dead_letter(10)
    assert letter is not None
    assert (letter.replayed_at, letter.replay_job_id) == (5000, 100)
    assert await driver.count_dead_letters() == 1
    assert ids(await driver.dead_letters(10)) == [20, 10]

    assert await driver.replay(10, new_job(101, created_at=6000)) == "already"
    assert await driver.replay(99, new_job(102, created_at=6000)) == "missing"
    assert await states(driver, [101, 102]) == {101: "missing", 102: "missing"}
    letter = await driver.get_dead_letter(10)
    assert letter is not None and letter.replay_job_id == 100
