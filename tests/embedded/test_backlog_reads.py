"""Reading a backlog from storage never holds up the dispatch of other work."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from shardq import JobService
from shardq.drivers.base import JobRef
from shardq.drivers.sqlite import SQLiteDriver
from shardq.models import PRIORITIES

LOW = PRIORITIES.index("low")


async def test_a_critical_job_starts_while_the_low_backlog_is_being_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    async with JobService(url, runner=False) as producer:
        await producer.submit("low", [None] * 300, priority="low")

    # The runner's read of the low backlog stalls until the critical job has started.
    reading = asyncio.Event()
    release = asyncio.Event()
    read = SQLiteDriver.load_ready

    async def slow_read(
        self: SQLiteDriver,
        shards: Collection[int] | None,
        priority: int,
        now: int,
        limit: int,
        after: int = 0,
    ) -> list[JobRef]:
        if priority == LOW and not release.is_set():
            reading.set()
            await release.wait()
        return await read(self, shards, priority, now, limit, after)

    monkeypatch.setattr(SQLiteDriver, "load_ready", slow_read)

    jobs = JobService(url)
    critical_started = asyncio.Event()
    low_done = 0
    all_low_done = asyncio.Event()

    @jobs.handler("critical")
    async def critical(payload: Any) -> None:
        critical_started.set()

    @jobs.handler("low")
    async def low(payload: Any) -> None:
        nonlocal low_done
        low_done += 1
        if low_done == 300:
            all_low_done.set()

    async with jobs:
        await asyncio.wait_for(reading.wait(), timeout=10)
        job_id = await jobs.submit("critical", None, priority="critical")
        await asyncio.wait_for(critical_started.wait(), timeout=10)
        assert (await jobs.wait(job_id, timeout=10)).status == "complete"
        # Once the read ends, the backlog runs in full.
        release.set()
        await asyncio.wait_for(all_low_done.wait(), timeout=30)
        stats = await jobs.stats()
        assert stats.by_status["complete"] == 301
