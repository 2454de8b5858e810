"""The server's round-trip floor under a runner's load: ``python -m bench.floor [--samples N]``.

Measures, from a process of its own (no runner, no event loop shared with one), a bare
``SELECT 1`` and a one-job submit (insert and commit) against PostgreSQL: first idle, then
while a runner process drains a backlog of no-op jobs on the same server. Whatever a job
system does, a critical job submitted behind that backlog needs at least two such round trips
(commit the job, commit its start) before its handler runs; how much each one slows down
under load bounds how close its latency can stay to the idle one. Prints the percentiles and
writes them to ``bench/results/floor.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import FreshPostgres, clock, latency_summary

OUT = Path(__file__).resolve().parent / "results" / "floor.json"
BACKLOG = 100_000
BATCH = 1_000


async def _round_trips(url: str, samples: int) -> dict[str, dict[str, float]]:
    import asyncpg

    from shardq import JobService

    warmup = 20
    out: dict[str, dict[str, float]] = {}
    conn = await asyncpg.connect(url)
    try:
        times = []
        for _ in range(warmup + samples):
            t0 = clock()
            await conn.fetchval("SELECT 1")
            times.append((clock() - t0) * 1000)
        out["select_1"] = latency_summary(times, warmup)
    finally:
        await conn.close()
    async with JobService(url, runner=False) as client:
        times = []
        for _ in range(warmup + samples):
            t0 = clock()
            await client.submit("other", None, priority="critical")
            times.append((clock() - t0) * 1000)
        out["submit_one"] = latency_summary(times, warmup)
    return out


async def _low_queued(url: str) -> int:
    from shardq import JobService

    async with JobService(url, runner=False) as client:
        return int((await client.stats()).queued_by_priority["low"])


async def measure(samples: int) -> dict[str, Any]:
    from shardq import JobService

    async with FreshPostgres("floor") as db:
        async with JobService(db.url, runner=False) as producer:
            for _ in range(BACKLOG // BATCH):
                await producer.submit("noop", [None] * BATCH, priority="low")
        idle = await _round_trips(db.url, samples)
        runner = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.shardq_target", "runner", db.url, "60"),
            stdout=asyncio.subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        try:
            deadline = time.monotonic() + 30
            while await _low_queued(db.url) > BACKLOG - 5 * BATCH:
                if time.monotonic() > deadline or runner.returncode is not None:
                    raise RuntimeError("the runner did not start draining the backlog")
                await asyncio.sleep(0.05)
            before = await _low_queued(db.url)
            busy = await _round_trips(db.url, samples)
            after = await _low_queued(db.url)
        finally:
            runner.kill()
            await runner.wait()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.floor" + (f" --samples {samples}" if samples != 500 else ""),
        "cores": os.cpu_count(),
        "idle": idle,
        "under_load": busy,
        "low_queued": [before, after],
    }


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=500, help="round trips per measurement")
    args = ap.parse_args()
    result = asyncio.run(measure(args.samples))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{'round trip':<12} {'load':<11} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    for what in ("select_1", "submit_one"):
        for load in ("idle", "under_load"):
            s = result[load][what]
            print(
                f"{what:<12} {load:<11} {s['p50_ms']:7.2f} {s['p90_ms']:7.2f}"
                f" {s['p99_ms']:7.2f} {s['max_ms']:7.2f}"
            )
        ratio = result["under_load"][what]["p99_ms"] / result["idle"][what]["p99_ms"]
        print(f"{what:<12} p99 under load / idle: {ratio:.1f}x")
    print(f"low jobs queued while measuring under load: {result['low_queued']}")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
