"""Schedules in a cluster: the owner of a schedule's shard is killed -9, twice, while it
ticks every 0.2 s; every tick still submits exactly one job."""

from __future__ import annotations

from typing import Any

import pytest

from shardq import JobService
from shardq.schedules import schedule_shard

from .conftest import Cluster, Worker, eventually

pytestmark = pytest.mark.postgres

EVERY_MS = 200


async def _owner(cluster: Cluster, shard: int) -> Worker | None:
    runner = await cluster.db.fetchval("SELECT owner FROM shardq_shards WHERE shard = $1", shard)
    alive = [w for w in cluster.workers if w.proc.poll() is None and w.runner_id == runner]
    return alive[0] if alive else None


async def _handled_through(cluster: Cluster) -> int:
    return int(await cluster.db.fetchval("SELECT after_ms FROM schedules WHERE name = 'beat'"))


async def _ticks_pass(cluster: Cluster, n: int) -> None:
    """Wait until ``n`` more ticks are handled."""
    target = await _handled_through(cluster) + n * EVERY_MS
    await eventually(lambda: _at_least(cluster, target), timeout=30, what=f"{n} more ticks handled")


async def _at_least(cluster: Cluster, target: int) -> bool:
    return await _handled_through(cluster) >= target


async def test_each_tick_is_one_job_while_owners_are_killed(cluster: Cluster, pg_url: str) -> None:
    for _ in range(3):
        await cluster.start_worker(concurrency=4)
    async with JobService(pg_url, runner=False) as web:
        await web.schedule("beat", job_type="noop", every=EVERY_MS / 1000, misfire="all")
        shard = schedule_shard("beat", web.config.shards)
        killed: list[Worker] = []
        for _ in range(2):
            await _ticks_pass(cluster, 5)
            owner = await eventually(lambda: _owner(cluster, shard), what="an owner")
            owner.kill9()
            killed.append(owner)
            moved: Any = await eventually(lambda: _owner(cluster, shard), what="a new owner")
            assert moved not in killed
        await _ticks_pass(cluster, 5)
        await web.unschedule("beat")
    rows = await cluster.db.fetch(
        "SELECT dedupe_key, schedule, tick FROM jobs WHERE dedupe_key LIKE 'shardq.schedule:beat@%'"
    )
    by_key = sorted(int(r["dedupe_key"].rsplit("@", 1)[1]) for r in rows)
    assert len(by_key) == len(set(by_key)), "a tick submitted two jobs"
    # Every tick from the first to the last has its job (misfire="all" fires the ticks
    # missed while the shard had no owner), and each job names its schedule and tick.
    first, last = by_key[0], by_key[-1]
    assert by_key == list(range(first, last + EVERY_MS, EVERY_MS))
    assert len(by_key) >= 15
    await eventually(lambda: _all_marked(cluster), timeout=30, what="every job to record its tick")


async def _all_marked(cluster: Cluster) -> bool:
    unmarked = await cluster.db.fetchval(
        "SELECT count(*) FROM jobs WHERE dedupe_key LIKE 'shardq.schedule:beat@%'"
        " AND (schedule IS DISTINCT FROM 'beat'"
        " OR dedupe_key <> 'shardq.schedule:beat@' || tick)"
    )
    return int(unmarked) == 0
