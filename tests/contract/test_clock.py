"""Time-driven behaviour, driven by an injected clock: delays, retry back-off, retention."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardq import FakeClock, JobError, RetryPolicy, current_job

from .conftest import ServiceFactory


async def test_a_delayed_job_runs_when_the_clock_reaches_its_time(
    make_service: ServiceFactory,
) -> None:
    clock = FakeClock()
    jobs = make_service(clock=clock)
    jobs.register_handler("t", lambda p: p)
    async with jobs:
        job_id = await jobs.submit("t", 1, delay=3600)
        await clock.advance(3599)
        assert (await jobs.status(job_id)).status == "queued"
        await clock.advance(1)
        assert (await jobs.wait(job_id, timeout=10)).status == "complete"


async def test_a_failed_attempt_is_retried_after_its_back_off(
    make_service: ServiceFactory,
) -> None:
    clock = FakeClock()
    jobs = make_service(clock=clock, retry=RetryPolicy(base=30.0, cap=60.0, jitter=0))

    @jobs.handler("flaky")
    async def flaky(p: Any) -> str:
        if current_job().attempt == 1:
            raise RuntimeError("first time")
        return "ok"

    retried = asyncio.Event()
    jobs.add_listener(lambda job_id, status: status == "queued" and retried.set())
    async with jobs:
        job_id = await jobs.submit("flaky", {})
        await asyncio.wait_for(retried.wait(), timeout=10)
        st = await jobs.status(job_id)
        assert (st.status, st.attempts) == ("queued", 1)
        await clock.advance(29.9)
        assert (await jobs.status(job_id)).attempts == 1
        await clock.advance(0.1)
        st = await jobs.wait(job_id, timeout=10)
        assert (st.status, st.attempts, st.result) == ("complete", 2, "ok")


async def test_finished_jobs_are_pruned_once_past_retention(make_service: ServiceFactory) -> None:
    clock = FakeClock()
    jobs = make_service(clock=clock, retention=3600, prune_interval=60)
    jobs.register_handler("t", lambda p: p)
    async with jobs:
        pruned = asyncio.Event()
        driver: Any = jobs.driver
        prune = driver.prune

        async def observed(*args: Any) -> int:
            n = int(await prune(*args))
            pruned.set()
            return n

        driver.prune = observed
        job_id = await jobs.submit("t", 1)
        assert (await jobs.wait(job_id, timeout=10)).status == "complete"
        for minute in range(1, 62):
            # Each minute starts a prune, whose I/O runs in real time: wait for it.
            pruned.clear()
            await clock.advance(60)
            await asyncio.wait_for(pruned.wait(), timeout=10)
            if minute <= 60:
                assert (await jobs.status(job_id)).status == "complete"
        with pytest.raises(JobError) as e:
            await jobs.status(job_id)
        assert e.value.reason == "NotFound"
