"""arq (Redis): Worker in the measuring process (asyncio), as shardq's runner is."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from typing import Any
from urllib.parse import urlsplit

from bench.common import REDIS_URL, clock, fresh_redis
from bench.peers._common import Starts, latency_loop, result

BATCH = 1000
MAX_JOBS = 64
POLL_DELAY = 0.5
SETTINGS = {
    "worker": "one arq Worker in-process",
    "max_jobs": MAX_JOBS,
    "poll_delay_s": POLL_DELAY,
    "keep_result_s": 3600,
    "enqueue": "enqueue_job, 1000 concurrent calls per batch (arq has no batch API)",
    "redis": REDIS_URL,
}


async def measure(target: str, scenario: str, p: dict[str, Any]) -> dict[str, Any]:
    fresh_redis().close()
    out = await SCENARIOS[scenario](p)
    return {**out, "version": importlib.metadata.version("arq")}


def _settings() -> Any:
    from arq.connections import RedisSettings

    u = urlsplit(REDIS_URL)
    return RedisSettings(
        host=u.hostname or "127.0.0.1", port=u.port or 6379, database=int(u.path[1:] or 0)
    )


@contextlib.asynccontextmanager
async def _setup(starts: Starts) -> Any:
    from arq import create_pool
    from arq.worker import Worker, func

    async def noop(ctx: dict[str, Any]) -> None:
        starts.started(ctx["job_id"])
        starts.finished()

    pool = await create_pool(_settings())
    worker = Worker(
        functions=[func(noop, name="noop")],
        redis_settings=_settings(),
        max_jobs=MAX_JOBS,
        poll_delay=POLL_DELAY,
        handle_signals=False,
    )
    try:
        yield pool, worker
    finally:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker.close()
        await pool.aclose()


@contextlib.asynccontextmanager
async def _running(worker: Any) -> Any:
    task = asyncio.create_task(worker.async_run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _enqueue(pool: Any, n: int) -> float:
    t0 = clock()
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        await asyncio.gather(*(pool.enqueue_job("noop") for _ in range(size)))
    return clock() - t0


async def latency(p: dict[str, Any]) -> dict[str, Any]:
    starts = Starts()
    async with _setup(starts) as (pool, worker), _running(worker):
        await asyncio.sleep(0.2)

        async def submit() -> Any:
            return (await pool.enqueue_job("noop")).job_id

        return await latency_loop(submit, starts.wait, p)


async def throughput(p: dict[str, Any]) -> dict[str, Any]:
    n = p["n"]
    starts = Starts()
    starts.target = n
    async with _setup(starts) as (pool, worker):
        enq = await _enqueue(pool, n)
        t0 = clock()
        async with _running(worker):
            await asyncio.wait_for(starts.all_done.wait(), p["timeout"])
            proc = clock() - t0
    return result(n, enq, proc)


async def concurrent(p: dict[str, Any]) -> dict[str, Any]:
    n = p["n"]
    starts = Starts()
    starts.target = n
    async with _setup(starts) as (pool, worker), _running(worker):
        t0 = clock()
        enq = await _enqueue(pool, n)
        await asyncio.wait_for(starts.all_done.wait(), p["timeout"])
        total = clock() - t0
    return result(n, enq, total)


SCENARIOS = {"latency": latency, "throughput": throughput, "concurrent": concurrent}
