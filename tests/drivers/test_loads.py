"""What a runner loads to schedule: queued jobs only, in the order and scope asked for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

import pytest

from shardq.drivers import Driver
from shardq.drivers.base import JobRef
from tests.rows import new_job

from .conftest import ids, start


async def test_load_refs_finds_the_queued_jobs_among_ids(driver: Driver) -> None:
    await driver.insert_jobs(
        [new_job(1, key="k", shard=4, priority=0, run_at=7000), new_job(2), new_job(3)]
    )
    await start(driver, [2])
    assert await driver.cancel_job(3, 2000) == "cancelled"
    assert await driver.load_refs([1, 2, 3, 99]) == [JobRef(1, 0, 7000, "k", 4, "t")]
    assert await driver.load_refs([]) == []


async def test_load_ready_takes_due_unkeyed_jobs_of_one_priority_oldest_first(
    driver: Driver,
) -> None:
    await driver.insert_jobs(
        [
            new_job(5),
            new_job(3),
            new_job(4, run_at=2000),
            new_job(6, run_at=2001),
            new_job(7, priority=1),
            new_job(8, key="k"),
            new_job(9),
            new_job(1),
        ]
    )
    await start(driver, [9])
    ready = await driver.load_ready(None, 2, 2000, 10)
    assert ready[0] == JobRef(1, 2, 1000, None, 0, "t")
    assert ids(ready) == [1, 3, 4, 5]
    assert ids(await driver.load_ready(None, 2, 2000, 2)) == [1, 3]
    assert ids(await driver.load_ready(None, 2, 2000, 10, after=3)) == [4, 5]
    assert ids(await driver.load_ready(None, 2, 1999, 10)) == [1, 3, 5]
    assert ids(await driver.load_ready(None, 2, 9000, 10, after=5)) == [6]
    assert ids(await driver.load_ready(None, 1, 2000, 10)) == [7]
    assert await driver.load_ready(None, 0, 2000, 10) == []


async def test_load_delayed_takes_unkeyed_jobs_due_later_soonest_first(driver: Driver) -> None:
    await driver.insert_jobs(
        [
            new_job(1, run_at=9000),
            new_job(2, run_at=3000, priority=0),
            new_job(3, run_at=2000),
            new_job(4, run_at=5000, key="k"),
            new_job(5, run_at=2500),
            new_job(6, run_at=4000),
        ]
    )
    await driver.cancel_job(6, 1500)
    delayed = await driver.load_delayed(None, 2000, 10)
    assert ids(delayed) == [5, 2, 1]
    assert delayed[1] == JobRef(2, 0, 3000, None, 0, "t")
    assert ids(await driver.load_delayed(None, 2000, 2)) == [5, 2]
    assert ids(await driver.load_delayed(None, 0, 10)) == [3, 5, 2, 1]
    assert await driver.load_delayed(None, 9000, 10) == []


async def test_load_keys_names_keys_with_queued_jobs(driver: Driver) -> None:
    await driver.insert_jobs(
        [
            new_job(1, key="a"),
            new_job(2, key="a"),
            new_job(3, key="b", run_at=9000),
            new_job(4, key="running"),
            new_job(5, key="cancelled"),
            new_job(6),
        ]
    )
    await start(driver, [4])
    await driver.cancel_job(5, 1500)
    assert sorted(await driver.load_keys(None, 10)) == ["a", "b"]
    assert len(await driver.load_keys(None, 1)) == 1


async def test_load_mailbox_takes_one_keys_queued_jobs_in_id_order(driver: Driver) -> None:
    await driver.insert_jobs(
        [
            new_job(4, key="a", run_at=9000),
            new_job(2, key="a", priority=0),
            new_job(3, key="a"),
            new_job(5, key="a"),
            new_job(6, key="b"),
            new_job(1, key="a"),
            new_job(7),
        ]
    )
    await start(driver, [1])
    await driver.cancel_job(5, 1500)
    mailbox = await driver.load_mailbox("a", 10)
    assert mailbox == [
        JobRef(2, 0, 1000, "a", 0, "t"),
        JobRef(3, 2, 1000, "a", 0, "t"),
        JobRef(4, 2, 9000, "a", 0, "t"),
    ]
    assert ids(await driver.load_mailbox("a", 2)) == [2, 3]
    assert await driver.load_mailbox("none", 10) == []


Load = Callable[[Driver, Collection[int] | None], Awaitable[list[Any]]]

LOADS: dict[str, Load] = {
    "load_ready": lambda d, shards: d.load_ready(shards, 2, 2000, 100),
    "load_delayed": lambda d, shards: d.load_delayed(shards, 2000, 100),
    "load_keys": lambda d, shards: d.load_keys(shards, 100),
}


@pytest.mark.parametrize("load", sorted(LOADS))
async def test_loads_are_limited_to_the_shards_given(driver: Driver, load: str) -> None:
    """None means every shard, an empty set none, a set only those."""
    await driver.insert_jobs(
        [new_job(10 * shard + 1, shard=shard) for shard in range(4)]
        + [new_job(10 * shard + 2, shard=shard, run_at=9000) for shard in range(4)]
        + [new_job(10 * shard + 3, shard=shard, key=f"key{shard}") for shard in range(4)]
    )

    async def shards_of(shards: Collection[int] | None) -> list[int]:
        found = await LOADS[load](driver, shards)
        return sorted(int(f[3:]) if isinstance(f, str) else f.shard for f in found)

    assert await shards_of(None) == [0, 1, 2, 3]
    assert await shards_of(set()) == []
    assert await shards_of({1, 3}) == [1, 3]
    assert await shards_of(frozenset({2})) == [2]
    assert await shards_of([0, 3, 5]) == [0, 3]
    assert await shards_of(set(range(3, 5000))) == [3]
