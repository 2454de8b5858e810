"""Dedupe keys: a duplicate submit returns the retained job's id, atomically."""

from __future__ import annotations

import asyncio
from typing import Any

from shardq import JobPayload

from .conftest import ServiceFactory


async def test_a_duplicate_returns_the_original_id(make_service: ServiceFactory) -> None:
    jobs = make_service()
    jobs.register_handler("t", lambda p: p)
    async with jobs:
        first = await jobs.submit("t", {"n": 1}, dedupe_key="welcome:42")
        second = await jobs.submit("t", {"n": 2}, dedupe_key="welcome:42")
        assert first == second
        results = await jobs.submit_many([JobPayload("t", {"n": 3}, dedupe_key="welcome:42")])
        assert results[0].job_id == first and results[0].duplicate
        assert (await jobs.wait(first, timeout=10)).result == {"n": 1}
        # Retained after it finished: still a duplicate.
        assert await jobs.submit("t", {"n": 4}, dedupe_key="welcome:42") == first


async def test_fifty_concurrent_submitters_with_one_key_make_one_job_that_runs_once(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()
    runs: list[Any] = []
    jobs.register_handler("t", runs.append)
    submitter = make_service(runner=False)
    async with jobs, submitter:
        ids = await asyncio.gather(
            *(
                (jobs if i % 2 else submitter).submit("t", {"i": i}, dedupe_key="once")
                for i in range(50)
            )
        )
        assert len(set(ids)) == 1
        await jobs.wait(ids[0], timeout=10)
        stats = await jobs.stats()
    assert len(runs) == 1
    assert sum(stats.by_status.values()) == 1


async def test_batch_items_get_per_index_keys(make_service: ServiceFactory) -> None:
    jobs = make_service()
    jobs.register_handler("t", lambda p: p)
    async with jobs:
        a = await jobs.submit("t", [1, 2, 3], dedupe_key="b")
        b = await jobs.submit("t", [1, 2, 3, 4], dedupe_key="b")
        assert b[:3] == a and b[3] not in a
        # Duplicates inside one batch collapse onto the first.
        dup = await jobs.submit_many(
            [JobPayload("t", 1, dedupe_key="same"), JobPayload("t", 2, dedupe_key="same")]
        )
        assert dup[0].job_id == dup[1].job_id and dup[1].duplicate and not dup[0].duplicate
