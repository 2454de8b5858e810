"""What is PostgreSQL's own: notification sizes, migrations under an advisory lock, upgrades, analysis, the shard table's fence,
listener and lock session loss, settings. What every engine does is in tests/drivers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from shardq import FakeClock, JobService
from shardq.drivers._sql import migrations
from shardq.drivers.base import Outcome
from shardq.drivers.postgres import PostgresDriver
from shardq.drivers.postgres.payloads import job_channel, submitted_notes
from shardq.drivers.postgres.shard_locks import ShardLocks
from tests.rows import new_job

from .conftest import eventually

pytestmark = pytest.mark.postgres


@pytest.fixture
async def driver(pg_url: str) -> AsyncIterator[PostgresDriver]:
    d = PostgresDriver(pg_url, runner=True)
    await d.open()
    try:
        yield d
    finally:
        await d.close()


def test_notification_payloads_stay_small() -> None:
    jobs = [new_job(10**18 + i, shard=i % 300, key="k" * 255) for i in range(100)]
    channels, payloads = submitted_notes(jobs, by_shard=False)
    assert len(payloads) > 1 and set(channels) == {"shardq_jobs"}
    assert all(len(p.encode()) < 8000 for p in payloads)
    assert sum(len(json.loads(p[1:])) for p in payloads) == 100
    many = [new_job(10**18 + i, shard=i % 300) for i in range(5000)]
    assert submitted_notes(many, by_shard=False) == (["shardq_jobs"], ["r"])
    assert submitted_notes(many, by_shard=True) == (["shardq_jobs"], ["r"])


def test_a_submit_over_few_shards_is_announced_on_their_channels() -> None:
    jobs = [new_job(10**18 + i, shard=i % 3) for i in range(9)]
    channels, payloads = submitted_notes(jobs, by_shard=True)
    assert (
        sorted(channels)
        == [job_channel(s) for s in range(3)]
        == [f"shardq_jobs_{s}" for s in range(3)]
    )
    for ch, p in zip(channels, payloads, strict=True):
        assert {item[1] for item in json.loads(p[1:])} == {int(ch.rsplit("_", 1)[1])}
    assert sorted(item[0] for p in payloads for item in json.loads(p[1:])) == [j.id for j in jobs]
    # Over many shards, one shared announcement costs less than a notification per shard.
    wide = [new_job(10**18 + i, shard=i) for i in range(40)]
    channels, payloads = submitted_notes(wide, by_shard=True)
    assert set(channels) == {"shardq_jobs"} and len(payloads) == 1


async def test_migrations_are_applied_once_by_concurrent_starters(pg_url: str) -> None:
    drivers = [PostgresDriver(pg_url, runner=False) for _ in range(4)]
    await asyncio.gather(*(d.open() for d in drivers))
    try:
        assert await drivers[0].migrate() == []
    finally:
        await asyncio.gather(*(d.close() for d in drivers))


async def test_an_upgraded_database_keeps_its_queued_and_running_jobs(pg_url: str) -> None:
    """A database written before migration 3 (job_queue) still runs and recovers its jobs."""
    db = await asyncpg.connect(pg_url)
    try:
        await db.execute(
            "CREATE TABLE shardq_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        for version, sql in migrations("shardq.drivers.postgres"):
            if version <= 2:
                await db.execute(sql)
                await db.execute("INSERT INTO shardq_migrations VALUES ($1, 0)", version)
        for i, state in ((1, "queued"), (2, "processing"), (3, "complete")):
            await db.execute(
                "INSERT INTO jobs (id, type, payload, priority, state, shard, max_attempts,"
                " duration, run_at, created_at, updated_at, owner, history) VALUES ($1, 't',"
                " '{}', 2, $2, 5, 3, 'short', 1000, 1000, 1000, $3, '[]')",
                i,
                state,
                "old-runner" if state == "processing" else None,
            )
    finally:
        await db.close()
    d = PostgresDriver(pg_url, runner=True)
    await d.open()
    try:
        assert [r.id for r in await d.load_ready(None, 2, 5000, 10)] == [1]
        assert await d.recover({5}, 6000) == 1
        assert [r.id for r in await d.load_ready(None, 2, 7000, 10)] == [1, 2]
        started = (await d.advance([], [1, 2], "A", 7000)).started
        done = [Outcome(s.id, s.attempts, "complete", 8000) for s in started]
        assert sorted((await d.advance(done, [], "A", 8000)).written) == [1, 2]
        assert await d.load_ready(None, 2, 9000, 10) == []
        assert await d.count_by_state() == {"complete": 3}
    finally:
        await d.close()


async def test_the_job_tables_are_analysed_as_inserts_grow_them(driver: PostgresDriver) -> None:
    """Plans cached while the table was small are remade: without it, a runner that started
    on an empty table would scan the whole table for every start once it is big."""

    async def analysed() -> bool:
        n = await driver.pool.fetchval(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('jobs', 'job_queue')"
            " AND last_analyze IS NOT NULL"
        )
        return bool(n == 2)

    await driver.insert_jobs([new_job(i) for i in range(1, 500)])
    assert not await analysed()
    await driver.insert_jobs([new_job(i) for i in range(500, 1200)])
    await eventually(analysed, what="the job tables to be analysed")
    plan = await driver.pool.fetch(
        "EXPLAIN SELECT id FROM jobs WHERE state = 'queued' AND id = ANY($1::bigint[])", [1, 2]
    )
    assert "Index" in plan[0][0]


async def test_a_start_is_refused_on_a_shard_another_runner_owns(driver: PostgresDriver) -> None:
    """Owner and attempt fence outcomes on every engine (tests/drivers/test_advance.py); on
    PostgreSQL a start is also fenced by the shard table."""
    await driver.insert_jobs([new_job(1, shard=7), new_job(2, shard=8), new_job(3, shard=7)])
    await driver.pool.execute(
        "INSERT INTO shardq_shards (shard, owner, acquired_at) VALUES (7, 'B', 0)"
    )
    assert [s.id for s in (await driver.advance([], [1, 2], "A", 2000)).started] == [2]
    # A step with outcomes fences its starts the same way.
    step = await driver.advance([Outcome(2, 1, "complete", 3000)], [3], "A", 3000)
    assert (step.written, step.started) == ([2], [])
    assert sorted(s.id for s in (await driver.advance([], [1, 3], "B", 3000)).started) == [1, 3]


async def test_a_large_batch_from_another_process_is_run(pg_url: str) -> None:
    """Over the notification size a batch is announced as a rescan; nothing is missed."""
    runner = JobService(pg_url)
    runner.register_handler("t", lambda p: p)
    async with runner, JobService(pg_url, runner=False) as web:
        ids = await web.submit("t", list(range(3000)))
        for job_id in (ids[0], ids[-1]):
            assert (await web.wait(job_id, timeout=20)).status == "complete"

        async def all_done() -> bool:
            stats = await web.stats()
            return stats.by_status["complete"] == 3000

        await eventually(all_done, what="3000 jobs to complete")


async def test_listener_loss_is_survived_by_waiters_and_runners(pg_url: str) -> None:
    runner = JobService(pg_url)

    @runner.handler("slow")
    async def slow(p: float) -> float:
        await asyncio.sleep(p)
        return p

    async with runner, JobService(pg_url, runner=False) as web:
        job_id = await web.submit("slow", 0.3)
        waiter = asyncio.create_task(web.wait(job_id, timeout=10))
        admin = await asyncpg.connect(pg_url)
        try:
            for svc in (web, runner):
                drv = svc.driver
                assert isinstance(drv, PostgresDriver) and drv.notifier is not None
                conn = drv.notifier.connection
                assert conn is not None
                await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        finally:
            await admin.close()
        assert (await waiter).status == "complete"
        later = await web.submit("slow", 0)
        assert (await web.wait(later, timeout=10)).status == "complete"


async def test_a_lost_lock_session_fences_at_once(pg_url: str) -> None:
    d = PostgresDriver(pg_url, runner=True)
    await d.open()
    changes: list[tuple[set[int], set[int]]] = []
    lost = asyncio.Event()

    async def on_change(acquired: set[int], gone: set[int]) -> None:
        changes.append((acquired, gone))
        if gone:
            lost.set()

    locks = d.ownership("r1", 16)
    assert isinstance(locks, ShardLocks)
    try:
        await locks.start(on_change)
        assert set(locks.owned() or ()) == set(range(16))
        conn = locks.connection
        assert conn is not None
        await d.pool.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        await asyncio.wait_for(lost.wait(), 5)
        assert changes[1] == (set(), set(range(16)))

        async def back() -> bool:
            return set(locks.owned() or ()) == set(range(16))

        await eventually(back, what="the shards to be re-acquired")
    finally:
        await locks.stop()
        await d.close()


async def test_the_postgres_settings_of_config_reach_the_runner(pg_url: str) -> None:
    jobs = JobService(pg_url, pool_size=3, heartbeat=0.1)
    async with jobs:
        driver = jobs.driver
        assert isinstance(driver, PostgresDriver)
        assert driver.pool.get_max_size() == 3
        db = await asyncpg.connect(pg_url)
        try:
            seen: set[int] = set()

            async def beats() -> bool:
                seen.add(await db.fetchval("SELECT heartbeat_at FROM shardq_runners"))
                return len(seen) >= 5

            # Five distinct heartbeats take about 0.4 s at 0.1 s; at the default 1 s, 4 s.
            await eventually(beats, timeout=2.0, what="five heartbeats")
        finally:
            await db.close()


def test_bad_postgres_settings_are_refused() -> None:
    for bad in ({"pool_size": 1}, {"heartbeat": 0}, {"heartbeat": 3600}, {"handover_timeout": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            JobService("postgresql://127.0.0.1/none", **bad)


async def test_heartbeats_follow_the_injected_clock(pg_url: str) -> None:
    clock = FakeClock()
    d = PostgresDriver(pg_url, runner=True, heartbeat=5.0, clock=clock)
    await d.open()
    locks = d.ownership("r1", 8)

    async def no_change(acquired: set[int], lost: set[int]) -> None:
        return None

    try:
        await locks.start(no_change)

        async def waiting() -> bool:  # its balancer has settled and waits for the clock
            return clock.pending == 1

        await eventually(waiting, what="the balancer to wait for its heartbeat")
        beat = "SELECT heartbeat_at FROM shardq_runners WHERE id = 'r1'"
        assert await d.pool.fetchval(beat) == clock.now_ms()
        await clock.advance(4.9)
        assert await d.pool.fetchval(beat) < clock.now_ms()
        await clock.advance(0.1)  # the fifth second: a heartbeat, stamped with the clock

        async def stamped() -> bool:
            return bool(await d.pool.fetchval(beat) == clock.now_ms())

        await eventually(stamped, what="a heartbeat at the clock's time")
    finally:
        await locks.stop()
        await d.close()
