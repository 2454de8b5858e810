"""procrastinate (PostgreSQL): worker in the measuring process, as shardq's runner is."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench.common import FreshPostgres, clock
from bench.peers._common import Starts, latency_loop, result, wait_until

CONCURRENCY = 64
SETTINGS = {
    "worker": "one worker in-process (run_worker_async)",
    "concurrency": CONCURRENCY,
    "listen_notify": True,
    "fetch_job_polling_interval_s": 5.0,
    "delete_jobs": "never",
    "connector": "PsycopgConnector (pool)",
    "enqueue": "batch_defer_async, batches of 1000",
}
BATCH = 1000


async def measure(target: str, scenario: str, p: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata

    async with FreshPostgres("procrastinate") as db:
        out = await SCENARIOS[scenario](db.url, p)
    return {**out, "version": importlib.metadata.version("procrastinate")}


def _app(url: str, starts: Starts) -> Any:
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=url))

    @app.task(name="noop", pass_context=True)
    async def noop(context: Any) -> None:
        starts.started(context.job.id)
        starts.finished()

    return app, noop


@contextlib.asynccontextmanager
async def _worker(app: Any) -> Any:
    task = asyncio.create_task(
        app.run_worker_async(
            concurrency=CONCURRENCY,
            install_signal_handlers=False,
            listen_notify=True,
            fetch_job_polling_interval=5.0,
            wait=True,
        )
    )
    await asyncio.sleep(0.2)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _succeeded(app: Any, n: int) -> bool:
    async with app.connector.pool.connection() as conn, conn.cursor() as cur:
        await cur.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
        row = await cur.fetchone()
    return bool(row[0] >= n)


async def latency(url: str, p: dict[str, Any]) -> dict[str, Any]:
    starts = Starts()
    app, noop = _app(url, starts)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        async with _worker(app):
            return await latency_loop(noop.defer_async, starts.wait, p)


async def _enqueue(noop: Any, n: int) -> float:
    t0 = clock()
    for start in range(0, n, BATCH):
        await noop.batch_defer_async(*[{} for _ in range(min(BATCH, n - start))])
    return clock() - t0


async def throughput(url: str, p: dict[str, Any]) -> dict[str, Any]:
    n = p["n"]
    starts = Starts()
    starts.target = n
    app, noop = _app(url, starts)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        enq = await _enqueue(noop, n)
        t0 = clock()
        async with _worker(app):
            await asyncio.wait_for(starts.all_done.wait(), p["timeout"])
            await wait_until(lambda: _succeeded(app, n), p["timeout"])
            proc = clock() - t0
    return result(n, enq, proc)


async def concurrent(url: str, p: dict[str, Any]) -> dict[str, Any]:
    n = p["n"]
    starts = Starts()
    starts.target = n
    app, noop = _app(url, starts)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        async with _worker(app):
            t0 = clock()
            enq = await _enqueue(noop, n)
            await asyncio.wait_for(starts.all_done.wait(), p["timeout"])
            await wait_until(lambda: _succeeded(app, n), p["timeout"])
            total = clock() - t0
    return result(n, enq, total)


SCENARIOS = {"latency": latency, "throughput": throughput, "concurrent": concurrent}
