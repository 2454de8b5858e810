"""A runner hears the submits of its own shards only, on their channels; a runner that
listens on the shared channel alone (an earlier version) still hears every submit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection

import asyncpg
import pytest

from shardq import FakeClock, JobService
from shardq.drivers.postgres import PostgresDriver
from shardq.drivers.postgres.hearing import WATCH_FOR
from shardq.drivers.postgres.payloads import job_channel
from shardq.drivers.postgres.shard_locks import MEMBERS_CHANNEL, RUNNER_LOCK_SPACE, ShardLocks

from .conftest import eventually

pytestmark = pytest.mark.postgres

SHARDS = 24


def _driver(svc: JobService) -> PostgresDriver:
    d = svc.driver
    assert isinstance(d, PostgresDriver)
    return d


async def _listening(svc: JobService) -> set[str]:
    """The channels the process's listening session is subscribed to, as the server says."""
    notifier = _driver(svc).notifier
    assert notifier is not None
    return set(await notifier.listening())


async def _owned(svc: JobService) -> set[int]:
    view = await svc.cluster()
    return {s for s, owner in enumerate(view.shard_map) if owner == view.this_runner}


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[tuple[JobService, JobService]]:
    a = JobService(pg_url, shards=SHARDS, heartbeat=0.1)
    b = JobService(pg_url, shards=SHARDS, heartbeat=0.1)
    for svc in (a, b):
        svc.register_handler("t", lambda p: p)
    async with a, b:

        async def split() -> bool:
            mine, theirs = await _owned(a), await _owned(b)
            return bool(mine) and bool(theirs) and len(mine) + len(theirs) == SHARDS

        await eventually(split, what="the shards to be split between the two runners")
        yield a, b


async def test_each_runner_listens_on_the_channels_of_its_shards_only(
    pair: tuple[JobService, JobService],
) -> None:
    for svc in pair:

        async def settled(svc: JobService = svc) -> bool:
            shards = await _owned(svc)
            want = {"shardq_jobs", MEMBERS_CHANNEL} | {job_channel(s) for s in shards}
            return await _listening(svc) == want

        await eventually(settled, what="a runner to listen on exactly its shards' channels")


async def test_submits_announced_by_shard_reach_their_owners(
    pair: tuple[JobService, JobService], pg_url: str
) -> None:
    async with JobService(pg_url, runner=False, shards=SHARDS) as web:
        assert _driver(web).by_shard
        # One job at a time, over every shard: each is heard only on its shard's channel.
        ids = [await web.submit("t", i, key=f"k{i}") for i in range(60)]
        done = await asyncio.gather(*(web.wait(i, timeout=10) for i in ids))
        assert {st.status for st in done} == {"complete"}
        assert "shardq_done" in await _listening(web)


async def test_finished_jobs_are_heard_while_something_waits_for_them(pg_url: str) -> None:
    """A runner that waits for nothing hears no finished job; a wait subscribes its process
    until WATCH_FOR seconds after its last look."""
    clock = FakeClock()
    runner = JobService(pg_url, shards=SHARDS)
    runner.register_handler("t", lambda p: p)
    async with runner, JobService(pg_url, runner=False, shards=SHARDS, clock=clock) as web:
        assert "shardq_done" not in await _listening(web)
        job_id = await web.submit("t", 1)
        assert (await web.wait(job_id, timeout=10)).status == "complete"
        assert "shardq_done" in await _listening(web)
        assert "shardq_done" not in await _listening(runner)
        await clock.advance(WATCH_FOR)

        async def unsubscribed() -> bool:
            return "shardq_done" not in await _listening(web)

        await eventually(unsubscribed, what="the wait's subscription to end")


async def test_a_runner_that_hears_only_the_shared_channel_is_still_told(pg_url: str) -> None:
    """While a runner of an earlier version is live, submits go to the shared channel; when
    one joins, the processes that announced by shard ask for a rescan."""
    async with JobService(pg_url, runner=False, shards=SHARDS) as web:
        assert _driver(web).by_shard
        older = await asyncpg.connect(pg_url)
        heard: asyncio.Queue[str] = asyncio.Queue()
        await older.add_listener("shardq_jobs", lambda *a: heard.put_nowait(str(a[3])))
        try:
            # What such a runner does on joining: hold its runner lock, write its row
            # (without hears_shards), announce itself.
            await older.execute("SELECT pg_advisory_lock($1, 4242)", RUNNER_LOCK_SPACE)
            await older.execute(
                "INSERT INTO shardq_runners (id, lock_key, app, host, pid, started_at,"
                " heartbeat_at) VALUES ('older', 4242, 'shardq', 'h', 1, 0, 0)"
            )
            await older.execute(f"SELECT pg_notify('{MEMBERS_CHANNEL}', 'join')")

            async def switched() -> bool:
                return not _driver(web).by_shard

            await eventually(switched, what="announcing on the shared channel")
            assert await asyncio.wait_for(heard.get(), 5) == "r"
            job_id = await web.submit("t", 1, key="a")
            while (payload := await asyncio.wait_for(heard.get(), 5)) == "r":
                pass
            assert payload.startswith("s") and str(json.loads(payload[1:])[0][0]) == job_id

            # Once it is gone (its session ends), submits go by shard again.
            await older.execute("SELECT pg_advisory_unlock_all()")
            await older.execute(f"SELECT pg_notify('{MEMBERS_CHANNEL}', 'left')")

            async def back() -> bool:
                return _driver(web).by_shard

            await eventually(back, what="announcing by shard again")
        finally:
            await older.close()


async def test_a_shard_is_listened_on_before_it_is_served(pg_url: str) -> None:
    """What is heard of a shard before its backlog is read must not be taken as new: the
    runner listens first, then serves the shard, then is told to read it, with nothing in
    between that could let a heard job of a key overtake the key's stored older one."""
    seen: list[tuple[str, set[int], set[int]]] = []

    async def gained(shards: Collection[int]) -> None:
        seen.append(("listen", set(shards), set(locks.owned() or ())))

    async def released(shards: Collection[int]) -> None:
        seen.append(("unlisten", set(shards), set(locks.owned() or ())))

    async def changed(got: set[int], lost: set[int]) -> None:
        seen.append(("changed", got | lost, set(locks.owned() or ())))

    migrated = PostgresDriver(pg_url, runner=False)
    await migrated.open()
    await migrated.close()
    locks = ShardLocks(pg_url, "r1", 4, gained=gained, released=released)
    await locks.start(changed)
    try:
        assert seen == [("listen", {0, 1, 2, 3}, set()), ("changed", {0, 1, 2, 3}, {0, 1, 2, 3})]
    finally:
        await locks.stop()
    assert seen[-1] == ("unlisten", {0, 1, 2, 3}, set())
