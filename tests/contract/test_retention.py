"""Retention: finished jobs and dead letters are pruned in batches, each past its own
retention on the service's clock; unfinished jobs stay; a dedupe key lives as long as its
job."""

from __future__ import annotations

import asyncio
from typing import Any

from shardq import FakeClock, JobError, JobService

from .conftest import ServiceFactory

RETENTION = 3600.0
DLQ_RETENTION = 7200.0
INTERVAL = 600.0
BATCH = 2


async def _exists(jobs: JobService, job_id: str) -> bool:
    try:
        await jobs.status(job_id)
    except JobError as e:
        assert e.reason == "NotFound"
        return False
    return True


async def test_finished_jobs_and_dead_letters_are_pruned_and_dedupe_keys_released(
    make_service: ServiceFactory,
) -> None:
    clock = FakeClock()
    jobs = make_service(
        clock=clock,
        retention=RETENTION,
        dlq_retention=DLQ_RETENTION,
        prune_interval=INTERVAL,
        prune_batch=BATCH,
    )

    @jobs.handler("t")
    async def t(p: Any) -> str:
        if p == "fail":
            raise JobError.from_validation(None, "no")
        return "ok"

    async with jobs:
        # Each round of pruning: the limit of each call, and whether the round has ended
        # (a call that found less than a batch).
        calls: list[int] = []
        round_done = asyncio.Event()
        driver: Any = jobs.driver
        prune = driver.prune

        async def observed(finished_before: int, dlq_before: int, limit: int) -> int:
            n = int(await prune(finished_before, dlq_before, limit))
            calls.append(limit)
            if n < limit:
                round_done.set()
            return n

        driver.prune = observed

        async def one_interval() -> list[int]:
            calls.clear()
            round_done.clear()
            await clock.advance(INTERVAL)
            await asyncio.wait_for(round_done.wait(), timeout=10)
            return list(calls)

        ids = await jobs.submit("t", ["a", "b", "c", "d", "e"], dedupe_key="k")
        failed = await jobs.submit("t", "fail")
        waiting = await jobs.submit("t", "later", delay=30 * 86_400)
        for job_id in [*ids, failed]:
            await jobs.wait(job_id, timeout=10)
        assert len(await jobs.dead_letters()) == 1

        # Up to the retention, everything is kept.
        for _ in range(int(RETENTION / INTERVAL)):
            await one_interval()
            for job_id in [*ids, failed]:
                assert await _exists(jobs, job_id)
        # The first round past it deletes the six finished jobs, two per call.
        limits = await one_interval()
        assert len(limits) >= 3 and set(limits) == {BATCH}
        for job_id in [*ids, failed]:
            assert not await _exists(jobs, job_id)
        # Unfinished jobs are kept; the dedupe key of a pruned job is free again.
        assert (await jobs.status(waiting)).status == "queued"
        again = await jobs.submit("t", ["a"], dedupe_key="k")
        assert again[0] not in ids

        # The dead letter has a retention of its own, and is kept until it has passed.
        for _ in range(int((DLQ_RETENTION - RETENTION) / INTERVAL) - 1):
            await one_interval()
            assert len(await jobs.dead_letters()) == 1
        await one_interval()
        assert await jobs.dead_letters() == []
        assert (await jobs.status(waiting)).status == "queued"
