"""Drivers shared by the peer adapters: the latency loop and the throughput timings."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import clock, latency_summary, rate

#: submit one job and return a handle; wait for it and return its handler start (clock()).
SubmitOne = Callable[[], Awaitable[Any]]
WaitStart = Callable[[Any], Awaitable[float]]


async def latency_loop(submit: SubmitOne, wait: WaitStart, p: dict[str, Any]) -> dict[str, Any]:
    """Submit one job at a time, wait for it, and record submit-to-handler-start."""
    samples = []
    for _ in range(p["warmup"] + p["n"]):
        t0 = clock()
        handle = await submit()
        started = await wait(handle)
        samples.append((started - t0) * 1000)
    return latency_summary(samples, p["warmup"])


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Poll ``check`` every 5 ms until it is true."""
    deadline = clock() + timeout
    while not await check():
        if clock() > deadline:
            raise TimeoutError("the peer did not finish in time")
        await asyncio.sleep(0.005)


def result(n: int, enqueue_s: float, process_s: float) -> dict[str, Any]:
    """The throughput result in the shape shardq's measurements use."""
    return {"n": n, "enqueue_jobs_s": rate(n, enqueue_s), "process_jobs_s": rate(n, process_s)}


class Starts:
    """Handler start times by job id, with a future per awaited id."""

    def __init__(self) -> None:
        self.times: dict[Any, float] = {}
        self.waiters: dict[Any, asyncio.Future[float]] = {}
        self.count = 0
        self.target = 0
        self.all_done = asyncio.Event()

    def started(self, job_id: Any) -> None:
        t = clock()
        self.times[job_id] = t
        fut = self.waiters.pop(job_id, None)
        if fut is not None and not fut.done():
            fut.set_result(t)

    def finished(self) -> None:
        self.count += 1
        if self.target and self.count >= self.target:
            self.all_done.set()

    async def wait(self, job_id: Any, timeout: float = 10) -> float:
        if job_id in self.times:
            return self.times.pop(job_id)
        fut = asyncio.get_running_loop().create_future()
        self.waiters[job_id] = fut
        t = await asyncio.wait_for(fut, timeout)
        self.times.pop(job_id, None)
        return t
