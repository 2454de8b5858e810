"""pgqueuer (PostgreSQL): QueueManager in the measuring process, as shardq's runner is."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from datetime import timedelta
from typing import Any

from bench.common import FreshPostgres, clock
from bench.peers._common import Starts, latency_loop, result, wait_until

BATCH = 1000
WORKER_BATCH = 10
SETTINGS = {
    "worker": "one QueueManager in-process, its own asyncpg connection",
    "batch_size": WORKER_BATCH,
    "max_concurrent_tasks": "unlimited (default)",
    "dequeue_timeout_s": 30,
    "wake-up": "LISTEN/NOTIFY, poll fallback every dequeue_timeout",
    "enqueue": "Queries.enqueue with lists, batches of 1000",
}


async def measure(target: str, scenario: str, p: dict[str, Any]) -> dict[str, Any]:
    async with FreshPostgres("pgqueuer") as db:
        out = await SCENARIOS[scenario](db.url, p)
    return {**out, "version": importlib.metadata.version("pgqueuer")}


@contextlib.asynccontextmanager
async def _setup(url: str, starts: Starts) -> Any:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager

    producer = await asyncpg.connect(url)
    worker_conn = await asyncpg.connect(url)
    queries = Queries(AsyncpgDriver(producer))
    await queries.install()
    qm = QueueManager(Queries(AsyncpgDriver(worker_conn)))

    @qm.entrypoint("noop")
    async def noop(job: Any) -> None:
        starts.started(job.id)
        starts.finished()

    try:
        yield producer, queries, qm
    finally:
        await producer.close()
        await worker_conn.close()


@contextlib.asynccontextmanager
async def _worker(qm: Any) -> Any:
    task = asyncio.create_task(
        qm.run(dequeue_timeout=timedelta(seconds=30), batch_size=WORKER_BATCH)
    )
    await asyncio.sleep(0.2)
    try:
        yield task
    finally:
        qm.shutdown.set()
        try:
            await asyncio.wait_for(task, 30)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()


async def _empty(conn: Any) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM pgqueuer") == 0)


async def _enqueue(queries: Any, n: int) -> float:
    t0 = clock()
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
    return clock() - t0


async def latency(url: str, p: dict[str, Any]) -> dict[str, Any]:
    starts = Starts()
    async with _setup(url, starts) as (_, queries, qm), _worker(qm):

        async def submit() -> Any:
            return (await queries.enqueue("noop", None))[0]

        return await latency_loop(submit, starts.wait, p)


async def throughput(url: str, p: dict[str, Any]) -> dict[str, Any]:
    n = p["n"]
    starts = Starts()
    starts.target = n
    async with _setup(url, starts) as (producer, queries, qm):
        enq = await _enqueue(queries, n)
        t0 = clock()
        async with _worker(qm):
            await asyncio.wait_for(starts.all_done.wait(), p["timeout"])
            await wait_until(lambda: _empty(producer), p["timeout"])
            proc = clock() - t0
    return result(n, enq, proc)


async def concurrent(url: str, p: dict[str, Any]) -> dict[str, Any]:
    n = p["n"]
    starts = Starts()
    starts.target = n
    async with _setup(url, starts) as (producer, queries, qm), _worker(qm):
        t0 = clock()
        enq = await _enqueue(queries, n)
        await asyncio.wait_for(starts.all_done.wait(), p["timeout"])
        await wait_until(lambda: _empty(producer), p["timeout"])
        total = clock() - t0
    return result(n, enq, total)


SCENARIOS = {"latency": latency, "throughput": throughput, "concurrent": concurrent}
