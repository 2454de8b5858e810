"""Recovery: interrupted jobs go back to the queue, except those the recovering runner runs."""

from __future__ import annotations

from shardq.drivers import Driver
from shardq.drivers.base import JobRef, Outcome
from tests.rows import new_job

from .conftest import complete, ids, start, states


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


async def test_a_recovered_job_is_queued_again_now_and_can_be_started(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1, run_at=1500), new_job(2), new_job(3)])
    await start(driver, [1, 2], owner="old")
    await complete(driver, [3], owner="old")
    assert await driver.recover(None, 4000) == 2
    record = await driver.get_job(1)
    assert record is not None
    assert (record.state, record.run_at, record.attempts) == ("queued", 4000, 1)
    assert record.history[-1][:2] == ("queued", 4000)
    assert await driver.load_ready(None, 2, 3999, 10) == []
    assert ids(await driver.load_ready(None, 2, 4000, 10)) == [1, 2]
    assert await states(driver, [3]) == {3: "complete"}

    # The interrupted attempt is fenced out; the next one counts on.
    assert (await start(driver, [1], owner="new", now=5000))[1].attempts == 2
    late = [Outcome(1, 1, "complete", 5000), Outcome(2, 1, "complete", 5000)]
    assert (await driver.advance(late, [], "old", 5000)).written == []
    assert await driver.recover(None, 6000, keep_owner="new") == 0


async def test_recover_cancels_a_job_whose_cancel_was_requested(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2)])
    await start(driver, [1, 2], owner="old")
    assert await driver.cancel_job(1, 2500) == "requested"
    assert await driver.recover(None, 3000) == 2
    assert await states(driver, [1, 2]) == {1: "cancelled", 2: "queued"}
    record = await driver.get_job(1)
    assert record is not None and record.finished_at == 3000
    assert record.history[-1][:2] == ("cancelled", 3000)


async def test_undo_starts_queues_again_only_the_owners_processing_jobs(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i, key="k" if i == 2 else None) for i in range(1, 7)])
    await start(driver, [1, 2, 3, 4], owner="A")
    await start(driver, [5], owner="B")
    assert await driver.cancel_job(3, 2500) == "requested"
    assert (await driver.advance([Outcome(4, 1, "complete", 2600)], [], "A", 2600)).written
    refs = await driver.undo_starts([1, 2, 3, 4, 5, 6, 99], "A", 3000)
    assert sorted(refs) == [JobRef(1, 2, 3000, None, 0, "t"), JobRef(2, 2, 3000, "k", 0, "t")]
    assert await states(driver, range(1, 7)) == {
        1: "queued", 2: "queued", 3: "cancelled", 4: "complete", 5: "processing", 6: "queued",
    }  # fmt: skip
    assert ids(await driver.load_mailbox("k", 10)) == [2]
    assert await driver.undo_starts([], "A", 3000) == []
    assert (await start(driver, [1], owner="A", now=4000))[1].attempts == 2
