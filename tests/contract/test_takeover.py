"""A runner that loses a shard and takes it back recovers the jobs left processing there,
but not the ones it started itself: those run once, under their first attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from shardq import current_job
from shardq.entity import job_entity

from .conftest import ServiceFactory


async def test_a_shard_regained_while_a_start_is_written_runs_that_job_once(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service(concurrency=2)
    runs: list[tuple[str, int]] = []

    @jobs.handler("t")
    async def t(p: Any) -> None:
        ctx = current_job()
        runs.append((ctx.job_id, ctx.attempt))

    committed = asyncio.Event()
    resume = asyncio.Event()

    async with jobs:
        runner = jobs._runner
        assert runner is not None
        driver: Any = jobs.driver
        advance = driver.advance

        async def held(outcomes: Sequence[Any], starts: Sequence[int], *args: Any) -> Any:
            done = await advance(outcomes, starts, *args)
            if starts and not committed.is_set():
                # The start is stored (the job is processing under this runner's token);
                # the runner has not seen the answer yet.
                committed.set()
                await asyncio.wait_for(resume.wait(), timeout=10)
            return done

        driver.advance = held
        job_id = await jobs.submit("t", {})
        await asyncio.wait_for(committed.wait(), timeout=10)
        shard = job_entity(int(job_id), None, jobs.config.shards).shard
        # The shard goes and comes back while the start is in flight: recovering it must
        # leave alone the job this runner is starting there.
        await runner.on_shards_changed(set(), {shard})
        await runner.on_shards_changed({shard}, set())
        resume.set()
        st = await jobs.wait(job_id, timeout=10)
    assert runs == [(str(job_id), 1)]
    assert (st.status, st.attempts) == ("complete", 1)
