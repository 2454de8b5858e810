"""Priorities: weighted shares of capacity, and critical work overtakes a backlog."""

from __future__ import annotations

import asyncio
from typing import Any

from .conftest import ServiceFactory


async def test_a_critical_job_overtakes_a_backlog_of_low_jobs(make_service: ServiceFactory) -> None:
    jobs = make_service(concurrency=1)
    gate = asyncio.Event()
    first_started = asyncio.Event()
    order: list[str] = []

    @jobs.handler("t")
    async def t(p: dict[str, Any]) -> None:
        order.append(p["name"])
        first_started.set()
        await gate.wait()

    async with jobs:
        await jobs.submit("t", {"name": "blocker"}, priority="low")
        await asyncio.wait_for(first_started.wait(), timeout=10)
        lows = await jobs.submit("t", [{"name": f"low{i}"} for i in range(200)], priority="low")
        critical = await jobs.submit("t", {"name": "critical"}, priority="critical")
        gate.set()
        await jobs.wait(critical, timeout=10)
        await jobs.wait(lows[-1], timeout=20)
    assert order[:2] == ["blocker", "critical"]


async def test_busy_priorities_share_capacity_by_weight(make_service: ServiceFactory) -> None:
    jobs = make_service(concurrency=1)
    gate = asyncio.Event()
    started = asyncio.Event()
    order: list[str] = []

    @jobs.handler("t")
    async def t(p: str) -> None:
        order.append(p)
        started.set()
        await gate.wait()

    async with jobs:
        blocker = await jobs.submit("t", "blocker", priority="low")
        await asyncio.wait_for(started.wait(), timeout=10)
        ids: list[str] = []
        for prio in ("critical", "high", "normal", "low"):
            ids += await jobs.submit("t", [prio] * 40, priority=prio)
        gate.set()
        for job_id in [blocker, *ids]:
            await jobs.wait(job_id, timeout=20)
    first_hundred = order[1:101]
    counts = {p: first_hundred.count(p) for p in ("critical", "high", "normal", "low")}
    # 4:3:2:1 of the first 100 starts while all four are busy (the blocker's start may
    # shift one start between neighbours).
    expected = {"critical": 40, "high": 30, "normal": 20, "low": 10}
    assert all(abs(counts[p] - n) <= 1 for p, n in expected.items()), counts


async def test_critical_work_starts_while_every_slot_is_busy(
    make_service: ServiceFactory,
) -> None:
    # Every one of the 16 slots runs low jobs; one more, beyond them, is kept for critical
    # jobs (one in sixteen).
    jobs = make_service(concurrency=16)
    gate = asyncio.Event()
    all_running = asyncio.Event()
    critical_started = asyncio.Event()
    running = 0

    @jobs.handler("low")
    async def low(p: Any) -> None:
        nonlocal running
        running += 1
        if running == 16:
            all_running.set()
        await gate.wait()

    @jobs.handler("urgent")
    async def urgent(p: Any) -> None:
        critical_started.set()

    async with jobs:
        lows = await jobs.submit("low", list(range(100)), priority="low")
        await asyncio.wait_for(all_running.wait(), timeout=10)
        critical = await jobs.submit("urgent", {}, priority="critical")
        # No low job has finished: the critical one starts in the kept slot.
        await asyncio.wait_for(critical_started.wait(), timeout=10)
        assert (await jobs.wait(critical, timeout=10)).status == "complete"
        assert running == 16  # with 84 lows waiting, none took the kept slot
        gate.set()
        for job_id in lows:
            await jobs.wait(job_id, timeout=20)
