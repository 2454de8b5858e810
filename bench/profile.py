"""Profile shardq's embedded hot path: ``python -m bench.profile [--jobs N] [--latency N]``.

Runs the "process" workload (a runner started on a backlog; the backlog is written first, and
shows in the tree under ``_enqueue``, but the time per job printed counts processing only), the "both at once" workload (submit in batches of 1,000 while the runner processes)
and the one-at-a-time latency loop under pyinstrument, and prints where the event-loop thread's
time goes, with the wall time per job. SQLite itself runs on the driver's writer and reader
threads; their share shows as the time the loop spends waiting on them.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.common import clock

OUT = Path(__file__).resolve().parent / "results"


async def _both(url: str, n: int) -> float:
    from bench.shardq_target import Counter, _enqueue
    from shardq import JobService

    counter = Counter(n)
    jobs = JobService(url)
    jobs.register_handler("noop", counter.noop)
    async with jobs:
        t0 = clock()
        await _enqueue(jobs, n)
        await counter.done.wait()
        return clock() - t0


async def _process(url: str, n: int) -> float:
    from bench.shardq_target import Counter, _enqueue
    from shardq import JobService

    async with JobService(url, runner=False) as producer:
        await _enqueue(producer, n)
    counter = Counter(n)
    jobs = JobService(url)
    jobs.register_handler("noop", counter.noop)
    t0 = clock()
    async with jobs:
        await counter.done.wait()
        return clock() - t0


async def _latency(url: str, n: int) -> float:
    from shardq import JobService

    async def noop(payload: Any) -> None:
        return None

    jobs = JobService(url)
    jobs.register_handler("noop", noop)
    async with jobs:
        for _ in range(50):
            await jobs.wait(await jobs.submit("noop", {}), timeout=10)
        t0 = clock()
        for _ in range(n):
            await jobs.wait(await jobs.submit("noop", {}), timeout=10)
        return clock() - t0


def main() -> int:
    from pyinstrument import Profiler

    ap = argparse.ArgumentParser(prog="python -m bench.profile")
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--latency", type=int, default=1000)
    ap.add_argument("--only", choices=("process", "both", "latency"))
    ap.add_argument("--interval", type=float, default=0.001, help="sampling interval (s)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    runs = (("process", _process, args.jobs), ("both", _both, args.jobs))
    runs += (("latency", _latency, args.latency),)
    for name, fn, n in runs:
        if args.only and name != args.only:
            continue
        tmp = tempfile.mkdtemp(prefix="shardq-profile-")
        try:
            profiler = Profiler(interval=args.interval, async_mode="disabled")
            profiler.start()
            elapsed = asyncio.run(fn(f"sqlite:///{tmp}/p.db", n))
            profiler.stop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        header = f"== {name}: {n} jobs in {elapsed:.2f}s, {elapsed / n * 1e6:.1f} us per job\n"
        (OUT / f"profile-{name}.txt").write_text(header + text)
        print(header + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
