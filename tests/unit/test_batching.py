from __future__ import annotations

import asyncio

from shardq._internal.batching import GroupCommit


async def test_callers_arriving_during_a_flush_share_the_next_batch() -> None:
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def store(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            await gate.wait()
        return [i * 10 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(store)
    first = asyncio.create_task(gc.submit([1]))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(gc.submit([i, i + 100])) for i in range(2, 6)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == [10]
    assert [await t for t in rest] == [[i * 10, (i + 100) * 10] for i in range(2, 6)]
    assert calls == [[1], [2, 102, 3, 103, 4, 104, 5, 105]]


async def test_a_failing_batch_fails_every_caller_in_it_and_later_batches_still_run() -> None:
    async def store(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("disk full")
        return items

    gc: GroupCommit[int, int] = GroupCommit(store)
    bad = asyncio.gather(gc.submit([13]), return_exceptions=True)
    assert isinstance((await bad)[0], RuntimeError)
    assert await gc.submit([1, 2]) == [1, 2]


async def test_one_callers_bad_items_never_fail_the_others_sharing_its_batch() -> None:
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def store(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            await gate.wait()
        if 13 in items:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return [i * 10 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(store)
    first = asyncio.create_task(gc.submit([1]))
    await asyncio.sleep(0)
    good = [asyncio.create_task(gc.submit([i, i + 100])) for i in (2, 3)]
    bad = asyncio.create_task(gc.submit([13, 14]))
    last = asyncio.create_task(gc.submit([5]))
    await asyncio.sleep(0)
    gate.set()
    assert await first == [10]
    assert [await t for t in good] == [[20, 1020], [30, 1030]]
    assert await last == [50]
    outcome = await asyncio.gather(bad, return_exceptions=True)
    assert isinstance(outcome[0], UnicodeEncodeError)
    # The shared batch failed as a whole; then each caller's part was tried on its own.
    assert calls[1] == [2, 102, 3, 103, 13, 14, 5]
    assert sorted(calls[2:]) == [[2, 102], [3, 103], [5], [13, 14]]


async def test_a_caller_that_went_away_is_not_stored_when_its_batch_is_split() -> None:
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def store(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            await gate.wait()
        if 13 in items:
            raise ValueError("refused")
        return items

    gc: GroupCommit[int, int] = GroupCommit(store)
    first = asyncio.create_task(gc.submit([1]))
    await asyncio.sleep(0)
    gone = asyncio.create_task(gc.submit([7]))
    bad = asyncio.create_task(gc.submit([13]))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    gate.set()
    await first
    await asyncio.gather(bad, gone, return_exceptions=True)
    assert [7] not in calls[2:]
