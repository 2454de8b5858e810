"""Notifications between processes: a runner hears of work and cancels committed elsewhere;
every process hears of finished jobs (where the engine announces them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from shardq.drivers import Driver, connect
from shardq.drivers.base import EventKind, JobRef, Outcome
from tests.rows import new_job

from .conftest import ids, start


class Heard:
    """An event handler that keeps what it hears and can be waited on."""

    def __init__(self) -> None:
        self.events: list[tuple[EventKind, list[int]]] = []
        self._changed = asyncio.Event()

    def __call__(self, kind: EventKind, job_ids: list[int]) -> None:
        self.events.append((kind, job_ids))
        self._changed.set()

    def of(self, kind: EventKind) -> set[int]:
        """Every id heard in events of ``kind``."""
        return {i for k, job_ids in self.events if k == kind for i in job_ids}

    def rescanned(self) -> bool:
        """Whether a rescan was asked for."""
        return any(k == "rescan" for k, _ in self.events)

    async def until(self, check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        """Wait until ``check()`` holds, re-checked on each event heard."""
        try:
            async with asyncio.timeout(timeout):
                while not check():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"not heard in {timeout}s: {what}; heard {self.events}") from None


@pytest.fixture
async def heard(driver: Driver) -> AsyncIterator[Heard]:
    """What the runner-side driver hears as runner ``A``, the owner of shards 0 to 7 (a
    runner hears of the submits to the shards it owns)."""
    handler = Heard()
    driver.listen(handler)
    owner = driver.ownership("A", 8)

    async def changed(gained: set[int], lost: set[int]) -> None:
        return None

    await owner.start(changed)
    assert set(owner.owned() or range(8)) == set(range(8))
    try:
        yield handler
    finally:
        await owner.stop()


@pytest.fixture
async def watcher(driver: Driver, other: Driver, heard: Heard) -> AsyncIterator[Heard]:
    """What ``other`` hears, once the runner is sure to know it listens: the runner has heard
    a job ``other`` submitted after it began to listen."""
    if not driver.announces_finished:
        pytest.skip("this engine does not announce finished jobs")
    handler = Heard()
    other.listen(handler)
    await other.keep_watching()
    await other.insert_jobs([new_job(10**6)])
    await heard.until(lambda: 10**6 in heard.of("submitted") or heard.rescanned(), "a submit")
    assert await driver.cancel_job(10**6, 1000) == "cancelled"
    await handler.until(lambda: 10**6 in handler.of("finished"), "the first finish")
    yield handler


async def test_jobs_submitted_elsewhere_wake_the_runner(
    driver: Driver, other: Driver, heard: Heard
) -> None:
    await other.insert_jobs([new_job(1, shard=3), new_job(2, key="k"), new_job(3, run_at=9000)])
    await heard.until(lambda: heard.of("submitted") >= {1, 2, 3}, "jobs 1, 2 and 3 submitted")
    assert sorted(await driver.load_refs([1, 2, 3])) == [
        JobRef(1, 2, 1000, None, 3, "t"),
        JobRef(2, 2, 1000, "k", 0, "t"),
        JobRef(3, 2, 9000, None, 0, "t"),
    ]
    assert await other.insert_jobs([new_job(4, dedupe="d"), new_job(5, dedupe="d")]) == [
        (4, False),
        (4, True),
    ]
    await heard.until(lambda: 4 in heard.of("submitted"), "job 4 submitted")
    assert 5 not in heard.of("submitted")


async def test_a_large_batch_submitted_elsewhere_is_not_missed(
    driver: Driver, other: Driver, heard: Heard
) -> None:
    """Too many ids for the engine's notifications may come as a rescan instead."""
    n = 3000
    await other.insert_jobs([new_job(i, shard=i % 7) for i in range(1, n + 1)])
    every = set(range(1, n + 1))
    await heard.until(lambda: heard.rescanned() or heard.of("submitted") >= every, "the batch")
    assert ids(await driver.load_ready(None, 2, 1000, n + 1)) == sorted(every)


async def test_a_cancel_requested_elsewhere_reaches_the_runner(
    driver: Driver, other: Driver, heard: Heard
) -> None:
    await driver.insert_jobs([new_job(1)])
    await start(driver, [1])
    assert await other.cancel_job(1, 2500) == "requested"
    await heard.until(lambda: 1 in heard.of("cancel"), "the cancel of job 1")


async def test_every_finished_job_is_announced_a_retried_one_is_not(
    driver: Driver, watcher: Heard
) -> None:
    n = 700  # more ids than one notification carries
    await driver.insert_jobs([new_job(i) for i in range(1, n + 1)])
    await start(driver, range(1, n + 1))
    done = [Outcome(i, 1, "complete", 3000) for i in range(1, n - 2)]
    await driver.advance(done, [], "A", 3000)
    mixed = [
        Outcome(n - 2, 1, "retry", 3000, error="E: again", run_at=9000),
        Outcome(n - 1, 1, "failed", 3000, error="E: no", reason="MaxRetries", dlq_id=5),
        Outcome(n, 1, "cancelled", 3000, error="cancelled"),
    ]
    await driver.advance(mixed, [], "A", 3000)
    expected = set(range(1, n + 1)) - {n - 2}
    await watcher.until(lambda: watcher.of("finished") >= expected, "every finished job")
    assert n - 2 not in watcher.of("finished")


async def test_cancels_are_announced_as_finished(
    driver: Driver, other: Driver, watcher: Heard, engine_url: str
) -> None:
    """Whoever cancels, and whether at once, on recovery or on an undone start."""
    third = connect(engine_url, runner=False)
    await third.open()
    try:
        await driver.insert_jobs([new_job(i) for i in range(1, 6)])
        await start(driver, [3, 4, 5])
        assert await driver.cancel_job(1, 2500) == "cancelled"
        assert await third.cancel_job(2, 2500) == "cancelled"
        for i in (3, 4):
            assert await third.cancel_job(i, 2500) == "requested"
        assert await driver.undo_starts([3], "A", 3000) == []
        assert await driver.recover(None, 3000, keep_owner="B") == 2
        await watcher.until(lambda: watcher.of("finished") >= {1, 2, 3, 4}, "jobs 1 to 4")
        assert 5 not in watcher.of("finished")
    finally:
        await third.close()


async def test_a_job_cancelled_after_its_announcement_is_never_started(
    driver: Driver, other: Driver, heard: Heard
) -> None:
    """load_refs may answer from what the announcement said (it need not read storage), so
    a job cancelled since may be among its refs; starting it then starts nothing."""
    await other.insert_jobs([new_job(1), new_job(2)])
    await heard.until(lambda: heard.of("submitted") >= {1, 2} or heard.rescanned(), "jobs 1, 2")
    assert await other.cancel_job(1, 1500) == "cancelled"
    refs = ids(await driver.load_refs([1, 2]))
    assert 2 in refs and set(refs) <= {1, 2}
    assert ids((await driver.advance([], refs, "A", 2000)).started) == [2]
