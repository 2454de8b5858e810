"""Per-key ordering: one at a time, in submit order, a retry keeps the head."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from shardq import current_job

from .conftest import ServiceFactory


async def test_jobs_of_a_key_run_one_at_a_time_in_submit_order_across_retries(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service(concurrency=16, mailbox_capacity=5)
    order: dict[str, list[int]] = defaultdict(list)
    running: dict[str, int] = defaultdict(int)
    overlap: list[str] = []

    @jobs.handler("step")
    async def step(p: dict[str, Any]) -> None:
        key = p["k"]
        running[key] += 1
        if running[key] > 1:
            overlap.append(key)
        try:
            await asyncio.sleep(0)
            # Every fifth step fails on its first attempt: its successors must wait for it.
            if p["i"] % 5 == 0 and current_job().attempt == 1:
                raise RuntimeError("flaky")
            order[key].append(p["i"])
        finally:
            running[key] -= 1

    async with jobs:
        ids = []
        for i in range(40):
            for k in ("a", "b", "c"):
                ids.append(await jobs.submit("step", {"k": k, "i": i}, key=k, max_attempts=3))
        for job_id in ids:
            assert (await jobs.wait(job_id, timeout=30)).status == "complete"
    assert not overlap
    assert order == {k: list(range(40)) for k in ("a", "b", "c")}


async def test_unkeyed_jobs_run_concurrently(make_service: ServiceFactory) -> None:
    jobs = make_service(concurrency=8)
    all_in = asyncio.Event()
    inside = 0

    @jobs.handler("wide")
    async def wide(p: Any) -> None:
        nonlocal inside
        inside += 1
        if inside == 4:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), timeout=10)

    async with jobs:
        ids = await jobs.submit("wide", [1, 2, 3, 4])
        for job_id in ids:
            assert (await jobs.wait(job_id, timeout=15)).status == "complete"


async def test_more_jobs_than_the_in_memory_window_all_run(make_service: ServiceFactory) -> None:
    jobs = make_service(ready_window=16, mailbox_capacity=3)
    done: list[Any] = []
    jobs.register_handler("t", done.append)
    async with jobs:
        ids = await jobs.submit("t", list(range(200)))
        keyed = [await jobs.submit("t", 1000 + i, key="k") for i in range(20)]
        for job_id in ids + keyed:
            assert (await jobs.wait(job_id, timeout=30)).status == "complete"
    assert sorted(done) == list(range(200)) + [1000 + i for i in range(20)]
    assert [d for d in done if isinstance(d, int) and d >= 1000] == [1000 + i for i in range(20)]


async def test_a_backlog_read_in_chunks_while_jobs_arrive_runs_each_job_once(
    make_service: ServiceFactory,
) -> None:
    # The window holds several reload chunks, and more jobs arrive while it is reloaded.
    jobs = make_service(concurrency=32, ready_window=2_500)
    runs: dict[int, int] = defaultdict(int)
    jobs.register_handler("t", lambda n: runs.__setitem__(n, runs[n] + 1))
    async with jobs:
        ids = await jobs.submit("t", list(range(6_000)), priority="low")
        for start in range(6_000, 9_000, 500):
            ids += await jobs.submit("t", list(range(start, start + 500)), priority="low")
        for job_id in ids:
            assert (await jobs.wait(job_id, timeout=60)).status == "complete"
    assert sorted(runs) == list(range(9_000))
    assert set(runs.values()) == {1}
