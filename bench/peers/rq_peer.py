"""RQ (Redis): two SimpleWorker processes (one per core; RQ runs one job at a time per worker).

RQ's default worker forks a child per job; SimpleWorker runs jobs in the worker process, which
is RQ's fastest setting for no-op jobs. The handler records its start time in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import REDIS_URL, clock, fresh_redis
from bench.peers._common import latency_loop, result, wait_until

BATCH = 1000
WORKERS = 2
QUEUE = "bench"
SETTINGS = {
    "worker": f"{WORKERS} x `rq worker --worker-class rq.worker.SimpleWorker` processes",
    "concurrency": f"{WORKERS} (one job at a time per worker)",
    "wake-up": "BLPOP on the queue (no poll interval)",
    "enqueue": "Queue.enqueue_many (one pipeline), batches of 1000",
    "redis": REDIS_URL,
}


def noop(record: bool) -> None:
    """The job: with ``record``, push its start time for the waiting submitter."""
    from rq import get_current_job

    t = clock()
    job = get_current_job()
    if job is None:
        return
    conn = job.connection
    if record:
        conn.rpush(f"bench:start:{job.id}", repr(t))
    conn.incr("bench:count")


async def measure(target: str, scenario: str, p: dict[str, Any]) -> dict[str, Any]:
    r = fresh_redis()
    try:
        out = await SCENARIOS[scenario](r, p)
    finally:
        r.flushdb()
        r.close()
    return {**out, "version": importlib.metadata.version("rq")}


@contextlib.contextmanager
def _workers(burst: bool = False) -> Iterator[list[subprocess.Popen[bytes]]]:
    rq = str(Path(sys.executable).parent / "rq")
    cmd = [rq, "worker", "--worker-class", "rq.worker.SimpleWorker", "--url", REDIS_URL]
    cmd += ["--quiet", *(["--burst"] if burst else []), QUEUE]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    procs = [
        subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL) for _ in range(WORKERS)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _queue(r: Any) -> Any:
    from rq import Queue

    return Queue(QUEUE, connection=r)


def _enqueue(q: Any, n: int) -> float:
    from rq import Queue

    t0 = clock()
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        q.enqueue_many([Queue.prepare_data(noop, args=(False,)) for _ in range(size)])
    return clock() - t0


async def _count_at_least(r: Any, n: int) -> bool:
    return int(r.get("bench:count") or 0) >= n


async def latency(r: Any, p: dict[str, Any]) -> dict[str, Any]:
    q = _queue(r)
    with _workers():
        q.enqueue(noop, True)  # wait for the workers to come up
        await wait_until(lambda: _count_at_least(r, 1), 30)

        async def submit() -> Any:
            return q.enqueue(noop, True).id

        async def wait(job_id: Any) -> float:
            _, value = await asyncio.to_thread(r.blpop, [f"bench:start:{job_id}"], 10)
            return float(value)

        return await latency_loop(submit, wait, p)


async def throughput(r: Any, p: dict[str, Any]) -> dict[str, Any]:
    n = p["n"]
    q = _queue(r)
    enq = _enqueue(q, n)
    t0 = clock()
    with _workers(burst=True):
        await wait_until(lambda: _count_at_least(r, n), p["timeout"])
        proc = clock() - t0
    return result(n, enq, proc)


async def concurrent(r: Any, p: dict[str, Any]) -> dict[str, Any]:
    n = p["n"]
    q = _queue(r)
    with _workers():
        await asyncio.sleep(1)  # let the workers start, as the other peers' do
        t0 = clock()
        enq = await asyncio.to_thread(_enqueue, q, n)
        await wait_until(lambda: _count_at_least(r, n), p["timeout"])
        total = clock() - t0
    return result(n, enq, total)


SCENARIOS = {"latency": latency, "throughput": throughput, "concurrent": concurrent}
