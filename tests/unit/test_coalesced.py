"""Work asked for while it runs runs once more afterwards, never twice at once."""

from __future__ import annotations

import asyncio

from shardq._internal.tasks import Coalesced


async def test_requests_during_a_run_make_one_more_run_never_two_at_once() -> None:
    release = asyncio.Event()
    runs: list[int] = []
    running = 0

    async def work() -> None:
        nonlocal running
        running += 1
        assert running == 1
        runs.append(len(runs))
        await release.wait()
        running -= 1

    once = Coalesced(work)
    first = once.request()
    await asyncio.sleep(0)
    assert [once.request() for _ in range(5)] == [first] * 5
    release.set()
    await asyncio.wait_for(first, timeout=5)
    assert runs == [0, 1]
    await asyncio.wait_for(once.request(), timeout=5)  # a new run once idle
    assert runs == [0, 1, 2]


async def test_work_that_asks_to_run_again_does_and_stop_cancels_it() -> None:
    calls = 0
    blocked = asyncio.Event()

    async def work() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            blocked.set()
            await asyncio.Event().wait()
        return True

    once = Coalesced(work)
    task = once.request()
    await asyncio.wait_for(blocked.wait(), timeout=5)
    assert calls == 3
    await once.stop()
    assert task.cancelled() and once.task is None
