"""A runner taking a shard over neither overtakes the previous owner's job of a key nor
runs a job twice that it started while recovering the shard."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from shardq import Config, JobService, RetryPolicy, current_job
from shardq.entity import job_entity
from shardq.sharding import HashRing

pytestmark = pytest.mark.postgres


def _service(url: str) -> JobService:
    return JobService(
        config=Config(
            database_url=url,
            concurrency=4,
            heartbeat=0.1,
            handover_timeout=0.2,
            retry=RetryPolicy(base=0.01, cap=0.05, jitter=0),
        )
    )


def _key_moving_to(first: JobService, second: JobService) -> str:
    """A key whose shard the second runner takes from the first when it joins."""
    ring = HashRing([first.runner_id, second.runner_id])
    shards = first.config.shards
    for i in range(10_000):
        key = f"acct:{i}"
        if ring.owner(job_entity(0, key, shards).shard) == second.runner_id:
            return key
    raise AssertionError("no key moves")


async def test_takeover_keeps_key_order_and_starts_nothing_twice(pg_url: str) -> None:
    first, second = _service(pg_url), _service(pg_url)
    key = _key_moving_to(first, second)
    shard = job_entity(0, key, first.config.shards).shard
    starts: list[tuple[int, int]] = []
    older_started = asyncio.Event()
    newer_started = asyncio.Event()

    async def step(p: dict[str, Any]) -> None:
        ctx = current_job()
        starts.append((p["i"], ctx.attempt))
        if p["i"] == 0 and ctx.attempt == 1:
            older_started.set()
            await asyncio.Event().wait()  # runs until the hand-over interrupts it
        if p["i"] == 1:
            newer_started.set()

    first.register_handler("step", step)
    second.register_handler("step", step)
    recovering = asyncio.Event()
    resume = asyncio.Event()

    async with first:
        older = await first.submit("step", {"i": 0}, key=key)
        await asyncio.wait_for(older_started.wait(), timeout=10)
        async with second:
            driver: Any = second.driver
            recover = driver.recover

            async def held_recover(shards: Any, *args: Any) -> int:
                if shard in shards:
                    recovering.set()
                    await asyncio.wait_for(resume.wait(), timeout=10)
                return int(await recover(shards, *args))

            driver.recover = held_recover
            await asyncio.wait_for(recovering.wait(), timeout=15)
            # The second runner owns the shard now and is recovering it: a new job of the
            # key, submitted to it, must wait for the job the first runner was running.
            newer = await second.submit("step", {"i": 1}, key=key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(newer_started.wait(), timeout=0.5)
            resume.set()
            for job_id in (older, newer):
                assert (await second.wait(job_id, timeout=20)).status == "complete"
            newer_status = await second.status(newer)
    key_starts = [i for i, _ in starts]
    assert key_starts == [0, 0, 1], starts
    assert newer_status.attempts == 1
