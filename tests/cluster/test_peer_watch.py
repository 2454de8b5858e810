"""A runner killed -9 is noticed the moment its session ends, not at the next heartbeat."""

from __future__ import annotations

import time

import asyncpg
import pytest

from shardq import FakeClock, JobService
from shardq.drivers.postgres import PostgresDriver
from shardq.drivers.postgres.peer_watch import successor
from shardq.drivers.postgres.shard_locks import RUNNER_LOCK_SPACE, SHARD_LOCK_SPACE, ShardLocks
from shardq.sharding import HashRing

from .conftest import Cluster, eventually

pytestmark = pytest.mark.postgres


def test_each_runner_watches_its_successor_in_the_ring() -> None:
    live = [("b", 2), ("a", 1), ("c", 3)]
    assert [successor(me, live) for me in "abc"] == [("b", 2), ("c", 3), ("a", 1)]
    assert successor("a", [("a", 1)]) is None
    assert successor("z", live) == ("a", 1)


async def test_shards_of_a_killed_runner_move_long_before_the_heartbeat(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a heartbeat of a minute, only the peer watch can explain a prompt takeover.
    monkeypatch.setenv("SHARDQ_TEST_HEARTBEAT", "60")
    workers = [await cluster.start_worker(concurrency=4) for _ in range(3)]
    victim = workers[0]

    async def spread() -> bool:
        return len(await cluster.owners()) == 3

    await eventually(spread, what="three runners to share the shards")
    async with JobService(cluster.url, runner=False) as web:
        victim.kill9()
        killed = time.monotonic()

        async def taken_over() -> bool:
            owners = await cluster.owners()
            return victim.runner_id not in owners and len(owners) == 2

        await eventually(taken_over, timeout=10, what="the victim's shards to move")
        moved_after = time.monotonic() - killed
        # And the cluster still runs jobs on every shard.
        ids = await web.submit("noop", [{}] * 30)
        for job_id in ids:
            assert (await web.wait(job_id, timeout=10)).status == "complete"
    assert moved_after < 5, f"took {moved_after:.2f} s"


async def test_a_dead_runners_shards_are_taken_before_the_live_runners_are_read_again(
    pg_url: str,
) -> None:
    # Told of a death, a runner takes its share at once from the ring it last read, less the
    # dead runner: the heartbeat statement that reads the live runners (and marks the dead
    # one gone) comes after. The "dead" runner is a bare session holding a runner lock and
    # the locks of the shards the ring gives it.
    migrated = PostgresDriver(pg_url, runner=False)
    await migrated.open()
    await migrated.close()
    dead_id, shards = "r0", 8
    dead = await asyncpg.connect(pg_url)
    db = await asyncpg.connect(pg_url)
    # (shards gained, the dead runner's gone_at when told of them)
    gains: list[tuple[set[int], object]] = []

    async def changed(got: set[int], lost: set[int]) -> None:
        if got:
            at = await db.fetchval("SELECT gone_at FROM shardq_runners WHERE id = $1", dead_id)
            gains.append((got, at))

    async def taken() -> bool:
        return bool(gains) and gains[-1][0] == set(theirs)

    # A fake clock: no heartbeat, and each balance's time tells it apart.
    clock = FakeClock(now_ms=1_000_000)
    locks = ShardLocks(pg_url, "r1", shards, heartbeat=60, clock=clock)
    try:
        await dead.execute("SELECT pg_advisory_lock($1, 7)", RUNNER_LOCK_SPACE)
        await dead.execute(
            "INSERT INTO shardq_runners (id, lock_key, app, host, pid, started_at, heartbeat_at,"
            " hears_shards) VALUES ($1, 7, 'shardq', 'h', 1, 0, 0, TRUE)",
            dead_id,
        )
        ring = HashRing([dead_id, "r1"])
        theirs = [s for s in range(shards) if ring.owner(s) == dead_id]
        assert theirs
        for s in theirs:
            await dead.execute("SELECT pg_advisory_lock($1, $2)", SHARD_LOCK_SPACE, s)
        await locks.start(changed)
        assert set(locks.owned() or ()) == set(range(shards)) - set(theirs)
        # The runner hears its own join and balances once more: let that balance read the
        # live runners before the death, so that no read is in flight when it comes.
        await clock.advance(0.001)
        await eventually(lambda: _heartbeat_at(db, "r1", 1_000_001), what="the second balance")
        await eventually(lambda: _waited_on(db, 7), what="r1 to watch r0's runner lock")
        # The shard locks go first, the runner lock with the session: a peer granted the
        # runner lock finds the shards free.
        for s in theirs:
            await dead.execute("SELECT pg_advisory_unlock($1, $2)", SHARD_LOCK_SPACE, s)
        await dead.close()
        await eventually(taken, timeout=10, what="r1 to take r0's shards")
        assert gains[-1] == (set(theirs), None)
    finally:
        await locks.stop()
        await db.close()
        if not dead.is_closed():
            await dead.close()


async def _heartbeat_at(db: asyncpg.Connection, runner: str, at: int) -> bool:
    return bool(
        await db.fetchval("SELECT heartbeat_at = $2 FROM shardq_runners WHERE id = $1", runner, at)
    )


async def _waited_on(db: asyncpg.Connection, key: int) -> bool:
    """Whether a session waits for the runner lock of ``key``."""
    waiting: bool = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2)",
        RUNNER_LOCK_SPACE,
        key,
    )
    return waiting
