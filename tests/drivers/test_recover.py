"""Recovery: interrupted jobs go back to the queue, except those the recovering runner runs."""

from __future__ import annotations

from shardq.drivers import Driver
from shardq.drivers.base import Outcome
from tests.rows import new_job


async def test_recover_queues_other_runners_jobs_and_leaves_the_recoverers(
    driver: Driver,
) -> None:
    await driver.insert_jobs([new_job(1, shard=3), new_job(2, shard=3), new_job(3, shard=4)])
    await driver.advance([], [1], "old", 2000)
    started = (await driver.advance([], [2, 3], "new", 2000)).started
    assert sorted(s.id for s in started) == [2, 3]

    # The new owner of shards 3 and 4 recovers them after it has started jobs 2 and 3.
    assert await driver.recover({3, 4}, 3000, "new") == 1
    assert [r.id for r in await driver.load_refs([1, 2, 3])] == [1]

    # Its own attempts still own their jobs: their outcomes are written.
    done = [Outcome(s.id, s.attempts, "complete", 4000) for s in started]
    assert sorted((await driver.advance(done, [], "new", 4000)).written) == [2, 3]
    assert (await driver.count_by_state()) == {"queued": 1, "complete": 2}


async def test_recover_is_limited_to_the_shards_given(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1, shard=3), new_job(2, shard=4)])
    await driver.advance([], [1, 2], "old", 2000)
    assert await driver.recover({4}, 3000) == 1
    assert [r.id for r in await driver.load_refs([1, 2])] == [2]
    assert await driver.recover(set(), 3000) == 0
    assert await driver.recover(None, 3000) == 1
