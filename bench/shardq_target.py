"""shardq measured in its two modes: embedded (a SQLite file) and PostgreSQL (one runner).

Every measurement runs in its own process on a fresh database. The runner runs in the
measuring process (embedded use: ``async with JobService(url) as jobs``) except for the memory
measurement, which reads a separate runner process's peak RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

from bench.common import (
    FreshPostgres,
    clock,
    cpu_seconds,
    emit,
    latency_summary,
    peak_rss_mb,
    rate,
)

BATCH = 1000


@contextlib.asynccontextmanager
async def fresh_database(target: str) -> AsyncIterator[str]:
    """The URL of a new, empty database for ``target``; removed afterwards."""
    if target == "shardq-postgres":
        async with FreshPostgres("shardq") as db:
            yield db.url
        return
    tmp = tempfile.mkdtemp(prefix="shardq-bench-")
    try:
        yield f"sqlite:///{tmp}/bench.db"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def settings() -> dict[str, Any]:
    """The settings every shardq measurement uses (the defaults)."""
    from shardq.config import Config

    c = Config()
    return {"concurrency": c.concurrency, "ready_window": c.ready_window, "poll": "none"}


class Counter:
    """Counts handler calls and fires when ``target`` is reached."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = asyncio.Event()

    async def noop(self, payload: Any) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()


async def _all_complete(jobs: Any, n: int, timeout: float) -> None:
    """Wait until ``n`` jobs are durably complete (read back from storage)."""
    deadline = time.monotonic() + timeout
    while True:
        st = await jobs.stats()
        if st.by_status["complete"] >= n:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {st.by_status['complete']} of {n} complete")
        await asyncio.sleep(0.005)


async def _enqueue(jobs: Any, n: int, *, keys: int = 0, priority: str = "normal") -> float:
    """Submit ``n`` no-op jobs in batches; returns the seconds it took."""
    from shardq.models import JobPayload

    t0 = clock()
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        if keys:
            specs = [
                JobPayload(type="noop", payload={}, priority=priority, key=f"k{(start + i) % keys}")
                for i in range(size)
            ]
            await jobs.submit_many(specs)
        else:
            await jobs.submit("noop", [{}] * size, priority=priority)
    return clock() - t0


async def _process(url: str, n: int, timeout: float) -> float:
    """Start a runner on a database holding ``n`` queued jobs; seconds until all complete."""
    from shardq import JobService

    counter = Counter(n)
    jobs = JobService(url)
    jobs.register_handler("noop", counter.noop)
    t0 = clock()
    async with jobs:
        await asyncio.wait_for(counter.done.wait(), timeout)
        await _all_complete(jobs, n, timeout)
        elapsed = clock() - t0
    return elapsed


async def latency(url: str, p: dict[str, Any]) -> dict[str, Any]:
    from shardq import JobService
    from shardq.context import current_job

    starts: dict[str, float] = {}
    async with JobService(url) as jobs:

        @jobs.handler("noop")
        async def noop(payload: Any) -> None:
            starts[current_job().job_id] = clock()

        samples = []
        for _ in range(p["warmup"] + p["n"]):
            t0 = clock()
            job_id = await jobs.submit("noop", {})
            await jobs.wait(job_id, timeout=10)
            samples.append((starts[job_id] - t0) * 1000)
    return latency_summary(samples, p["warmup"])


async def throughput(url: str, p: dict[str, Any]) -> dict[str, Any]:
    from shardq import JobService

    n = p["n"]
    async with JobService(url, runner=False) as producer:
        enq = await _enqueue(producer, n, keys=p.get("keys", 0))
    proc = await _process(url, n, p["timeout"])
    return {"n": n, "enqueue_jobs_s": rate(n, enq), "process_jobs_s": rate(n, proc)}


async def concurrent(url: str, p: dict[str, Any]) -> dict[str, Any]:
    from shardq import JobService

    n = p["n"]
    counter = Counter(n)
    jobs = JobService(url)
    jobs.register_handler("noop", counter.noop)
    async with jobs:
        t0 = clock()
        enq = await _enqueue(jobs, n)
        await asyncio.wait_for(counter.done.wait(), p["timeout"])
        await _all_complete(jobs, n, p["timeout"])
        total = clock() - t0
    return {"n": n, "enqueue_jobs_s": rate(n, enq), "process_jobs_s": rate(n, total)}


async def backlog(url: str, p: dict[str, Any]) -> dict[str, Any]:
    """Critical jobs one at a time on an idle runner, then behind ``backlog`` low jobs."""
    from shardq import JobService
    from shardq.context import current_job

    starts: dict[str, float] = {}

    async def noop(payload: Any) -> None:
        starts[current_job().job_id] = clock()

    async def measure(jobs: Any) -> dict[str, float]:
        samples = []
        for _ in range(p["warmup"] + p["n"]):
            t0 = clock()
            job_id = await jobs.submit("noop", None, priority="critical")
            await jobs.wait(job_id, timeout=30)
            samples.append((starts[job_id] - t0) * 1000)
        return latency_summary(samples, p["warmup"])

    jobs = JobService(url)
    jobs.register_handler("noop", noop)
    async with jobs:
        idle = await measure(jobs)
        for _ in range(p["backlog"] // BATCH):
            await jobs.submit("noop", [None] * BATCH, priority="low")
        before = (await jobs.stats()).queued_by_priority["low"]
        busy = await measure(jobs)
        after = (await jobs.stats()).queued_by_priority["low"]
    return {
        "idle": idle,
        "behind_backlog": busy,
        "low_queued_before": before,
        "low_queued_after": after,
        "p99_ratio": busy["p99_ms"] / idle["p99_ms"],
    }


async def memory(url: str, p: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of a runner process started on ``n`` queued jobs and run for ``hold`` s."""
    from shardq import JobService

    n = p["n"]
    async with JobService(url, runner=False) as producer:
        enq = await _enqueue(producer, n)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.shardq_target",
        "runner",
        url,
        str(p["hold"]),
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    child = _result_line(out)
    return {"queued": n, "enqueue_jobs_s": rate(n, enq), **child}


async def idle(url: str, p: dict[str, Any]) -> dict[str, Any]:
    """CPU used by a started runner with nothing to do, over ``seconds``."""
    from shardq import JobService

    counter = Counter(100)
    jobs = JobService(url)
    jobs.register_handler("noop", counter.noop)
    async with jobs:
        await jobs.submit("noop", [{}] * 100)
        await counter.done.wait()
        await asyncio.sleep(1)
        c0, t0 = cpu_seconds(), clock()
        await asyncio.sleep(p["seconds"])
        used, wall = cpu_seconds() - c0, clock() - t0
    return {"seconds": wall, "cpu_s": used, "core_pct": 100 * used / wall}


async def probe(url: str, p: dict[str, Any]) -> dict[str, Any]:
    """Whether this mode works here: one job end to end."""
    from shardq import JobService

    async with JobService(url) as jobs:
        jobs.register_handler("noop", Counter(1).noop)
        st = await jobs.wait(await jobs.submit("noop", {}), timeout=10)
    return {"ok": st.status == "complete"}


SCENARIOS = {
    "probe": probe,
    "latency": latency,
    "throughput": throughput,
    "concurrent": concurrent,
    "keys": throughput,
    "backlog": backlog,
    "memory": memory,
    "idle": idle,
}


async def measure(target: str, scenario: str, params: dict[str, Any]) -> dict[str, Any]:
    import shardq

    async with fresh_database(target) as url:
        result = await SCENARIOS[scenario](url, params)
    return {**result, "version": shardq.__version__ if hasattr(shardq, "__version__") else "?"}


def _result_line(out: bytes) -> dict[str, Any]:
    import json

    from bench.common import RESULT_PREFIX

    for line in reversed(out.decode().splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    raise RuntimeError("the runner process printed no result")


async def _runner_child(url: str, hold: float) -> None:
    from shardq import JobService

    counter = Counter(1 << 62)
    jobs = JobService(url)
    jobs.register_handler("noop", counter.noop)
    rss0 = peak_rss_mb()
    async with jobs:
        await asyncio.sleep(hold)
        processed = counter.count
    emit({"runner_peak_rss_mb": peak_rss_mb(), "rss_before_start_mb": rss0, "processed": processed})


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "runner":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(_runner_child(sys.argv[2], float(sys.argv[3])))
