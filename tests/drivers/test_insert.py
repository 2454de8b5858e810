"""Insert and dedupe: a batch is stored whole or not at all; a dedupe key has one holder."""

from __future__ import annotations

import asyncio

import pytest

from shardq.drivers import Driver, connect
from tests.rows import new_job

from .conftest import complete, ids, states


async def test_a_batch_is_stored_queued_and_its_ids_returned(driver: Driver) -> None:
    jobs = [new_job(7, shard=3, key="k", priority=1, run_at=5000), new_job(2), new_job(9)]
    assert await driver.insert_jobs(jobs) == [(7, False), (2, False), (9, False)]
    record = await driver.get_job(7)
    assert record is not None
    assert (record.type, record.payload, record.priority, record.key, record.shard) == (
        "t", '{"n": 7}', 1, "k", 3,
    )  # fmt: skip
    assert (record.state, record.attempts, record.run_at, record.created_at) == (
        "queued", 0, 5000, 1000,
    )  # fmt: skip
    assert (record.finished_at, record.result, record.error) == (None, None, None)
    assert record.history == [("queued", 1000, None)]
    assert await driver.insert_jobs([]) == []


async def test_a_duplicate_within_one_batch_gets_the_first_ones_id(driver: Driver) -> None:
    jobs = [new_job(1, dedupe="d"), new_job(2, dedupe="d"), new_job(3), new_job(4, dedupe="e")]
    assert await driver.insert_jobs(jobs) == [(1, False), (1, True), (3, False), (4, False)]
    assert await states(driver, [1, 2, 3, 4]) == {
        1: "queued", 2: "missing", 3: "queued", 4: "queued",
    }  # fmt: skip


async def test_a_retained_job_holds_its_dedupe_key_in_every_state(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1, dedupe="queued"), new_job(2, dedupe="done")])
    assert await complete(driver, [2]) == [2]
    again = [new_job(3, dedupe="done"), new_job(4, dedupe="queued"), new_job(5, dedupe="new")]
    assert await driver.insert_jobs(again) == [(2, True), (1, True), (5, False)]
    assert ids(await driver.load_refs([3, 4, 5])) == [5]


async def test_a_pruned_job_frees_its_dedupe_key(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1, dedupe="d")])
    await complete(driver, [1], at=3000)
    assert await driver.prune(4000, 0, 10) == 1
    assert await driver.insert_jobs([new_job(2, dedupe="d")]) == [(2, False)]
    assert await driver.insert_jobs([new_job(3, dedupe="d")]) == [(2, True)]


@pytest.mark.parametrize("dedupe", [None, "x"], ids=["plain", "deduped"])
async def test_a_batch_that_fails_stores_nothing(driver: Driver, dedupe: str | None) -> None:
    """A job id already taken makes the whole batch fail; the error says storage refused it
    (so it is not retried as an outage), and none of the batch's jobs or keys are kept."""
    await driver.insert_jobs([new_job(1)])
    with pytest.raises(Exception) as refused:
        await driver.insert_jobs([new_job(2, dedupe=dedupe), new_job(3, key="k"), new_job(1)])
    assert not driver.unreachable(refused.value)
    assert await states(driver, [1, 2, 3]) == {1: "queued", 2: "missing", 3: "missing"}
    assert await driver.load_keys(None, 10) == []
    assert await driver.insert_jobs([new_job(4, dedupe="x")]) == [(4, False)]


async def test_a_dedupe_key_has_one_holder_across_concurrent_inserters(
    driver: Driver, engine_url: str
) -> None:
    drivers = [driver]
    try:
        for _ in range(3):
            drivers.append(connect(engine_url, runner=False))
            await drivers[-1].open()
        results = await asyncio.gather(
            *(
                d.insert_jobs([new_job(100 * n + k, dedupe="once")])
                for n in range(1, 11)
                for k, d in enumerate(drivers)
            )
        )
    finally:
        for d in drivers[1:]:
            await d.close()
    holders = {holder for [(holder, _)] in results}
    assert len(holders) == 1
    assert [duplicate for [(_, duplicate)] in results].count(False) == 1
    assert await driver.count_by_state() == {"queued": 1}
