"""The live feed reads and waits for time on its service's clock: its samples move when a
``FakeClock`` is advanced, and carry that clock's time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shardq import FakeClock, JobService
from shardq.http.live import LiveFeed

Events = asyncio.Queue[tuple[str, dict[str, Any]]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def jobs(sqlite_url: str, clock: FakeClock) -> AsyncIterator[JobService]:
    svc = JobService(sqlite_url, clock=clock)
    svc.register_handler("echo", lambda p: p)
    async with svc:
        yield svc


@pytest.fixture
async def feed(jobs: JobService) -> AsyncIterator[LiveFeed]:
    live = LiveFeed(jobs, interval=1.0)
    yield live
    await live.close()


@pytest.fixture
async def events(feed: LiveFeed) -> AsyncIterator[Events]:
    """The feed's events, as a dashboard reads them, from its ``hello`` on."""
    out: Events = asyncio.Queue()

    async def read() -> None:
        async for msg in feed.stream():
            lines = dict(line.split(": ", 1) for line in msg.strip().splitlines() if ": " in line)
            if "event" in lines:
                await out.put((lines["event"], json.loads(lines["data"])))

    reader = asyncio.create_task(read())
    yield out
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)


async def _next(events: Events, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            seen, data = await events.get()
            if seen == kind:
                return data


async def test_a_snapshot_is_stamped_with_the_service_clock(
    feed: LiveFeed, clock: FakeClock
) -> None:
    assert feed.snapshot()["time"] == clock.now_ms() / 1000
    await clock.advance(86_400)
    assert feed.snapshot()["time"] == clock.now_ms() / 1000


async def test_samples_are_taken_when_the_clock_reaches_the_interval(
    jobs: JobService, feed: LiveFeed, events: Events, clock: FakeClock
) -> None:
    hello = await _next(events, "hello")
    assert hello["time"] == clock.now_ms() / 1000
    ids = await jobs.submit("echo", [1, 2, 3])
    for job_id in ids:
        assert (await jobs.wait(job_id, timeout=10)).status == "complete"
    await clock.advance(0.5)  # the transitions' message waits for the clock too
    transitions = (await _next(events, "jobs"))["transitions"]
    assert {t["id"] for t in transitions} >= set(ids)
    await asyncio.sleep(0.2)  # real time passes; the service's does not: no sample yet
    assert all(kind != "tick" for kind, _ in _drain(events))
    await clock.advance(0.5)
    tick = await _next(events, "tick")
    # The sample's time and rate are the clock's: 3 jobs in the 1 s since the feed began.
    assert tick["point"]["t"] == clock.now_ms() / 1000 == tick["time"]
    assert tick["point"]["completed_per_s"] == 3.0
    await clock.advance(2.0)
    later = await _next(events, "tick")
    assert later["point"]["t"] == tick["point"]["t"] + 1
    assert later["point"]["completed_per_s"] == 0.0


async def test_resyncs_are_spaced_on_the_service_clock(
    jobs: JobService, feed: LiveFeed, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    stats = jobs.stats

    async def counted() -> Any:
        nonlocal reads
        reads += 1
        return await stats()

    monkeypatch.setattr(jobs, "stats", counted)
    await feed.resync(force=True)
    await clock.advance(1.9)
    await feed.resync()
    assert reads == 1
    await clock.advance(0.1)
    await feed.resync()
    assert reads == 2


def _drain(events: Events) -> list[tuple[str, dict[str, Any]]]:
    out = []
    while not events.empty():
        out.append(events.get_nowait())
    return out
