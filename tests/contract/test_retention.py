"""Retention: finished jobs and dead letters are pruned; a dedupe key lives as long as its job."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shardq import JobError, JobService

from .conftest import ServiceFactory


async def _gone(jobs: JobService, job_id: str, timeout: float) -> None:
    """Wait until the job has been pruned (the runner prunes on its own timer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await jobs.status(job_id)
        except JobError as e:
            assert e.reason == "NotFound"
            return
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} was not pruned within {timeout}s")
        await asyncio.sleep(0.02)


async def test_finished_jobs_are_pruned_and_their_dedupe_key_released(
    make_service: ServiceFactory,
) -> None:
    # Retention long enough that every job is still there when its wait() reads it.
    jobs = make_service(retention=1.0, dlq_retention=1.0, prune_interval=0.05, prune_batch=2)

    @jobs.handler("t")
    async def t(p: Any) -> str:
        if p == "fail":
            raise JobError.from_validation(None, "no")
        return "ok"

    async with jobs:
        ids = await jobs.submit("t", ["a", "b", "c", "d", "e"], dedupe_key="k")
        failed = await jobs.submit("t", "fail")
        waiting = await jobs.submit("t", "later", delay=3600)
        for job_id in [*ids, failed]:
            await jobs.wait(job_id, timeout=10)
        assert len(await jobs.dead_letters()) == 1
        for job_id in [*ids, failed]:
            await _gone(jobs, job_id, timeout=10)
        # Pruned in batches of two until nothing old is left, dead letters included.
        deadline = time.monotonic() + 10
        while await jobs.dead_letters():
            assert time.monotonic() < deadline, "dead letter was not pruned"
            await asyncio.sleep(0.02)
        # Unfinished jobs are kept; the dedupe key of a pruned job is free again.
        assert (await jobs.status(waiting)).status == "queued"
        again = await jobs.submit("t", ["a"], dedupe_key="k")
        assert again[0] not in ids
