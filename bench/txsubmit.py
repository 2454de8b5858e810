"""Commit-to-start latency of jobs submitted in the application's own transaction.

``python -m bench.txsubmit [--jobs N] [--engine sqlite|postgres|both]``

One job at a time on an idle runner, each in a transaction that also writes an application
row: the clock starts just before the application's commit and stops when the handler starts.
For comparison, the same loop with a plain ``submit`` (clock started before the call). The
PostgreSQL server is ``BENCH_PG_URL`` (see ``bench.common``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from bench.common import FreshPostgres, clock, latency_summary

WARMUP = 20


class _App:
    """The application's side: its own connection and an ``orders`` table."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None

    async def open(self) -> None:
        if self.url.startswith("sqlite:"):
            self.conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            self.conn.execute("CREATE TABLE orders (id INTEGER)")
            self.conn.commit()
        else:
            import asyncpg

            self.conn = await asyncpg.connect(self.url)
            await self.conn.execute("CREATE TABLE orders (id bigint)")

    async def close(self) -> None:
        if isinstance(self.conn, sqlite3.Connection):
            self.conn.close()
        else:
            await self.conn.close()

    async def one(self, jobs: Any, i: int) -> float:
        """Insert a row and submit a job in one transaction; the time just before commit."""
        if isinstance(self.conn, sqlite3.Connection):
            self.conn.execute("INSERT INTO orders VALUES (?)", (i,))
            await jobs.submit("t", {"i": i}, conn=self.conn)
            t0 = clock()
            self.conn.commit()
            return t0
        tx = self.conn.transaction()
        await tx.start()
        await self.conn.execute("INSERT INTO orders VALUES ($1)", i)
        await jobs.submit("t", {"i": i}, conn=self.conn)
        t0 = clock()
        await tx.commit()
        return t0


async def measure(url: str, n: int, transactional: bool) -> dict[str, float]:
    """Latency summary (ms) of ``n`` one-at-a-time jobs on ``url``."""
    from shardq import JobService

    started: dict[int, asyncio.Future[float]] = {}
    jobs = JobService(url)

    @jobs.handler("t")
    async def t(p: dict[str, int]) -> None:
        started[p["i"]].set_result(clock())

    app = _App(url)
    samples: list[float] = []
    async with jobs:
        await app.open()
        try:
            loop = asyncio.get_running_loop()
            for i in range(n + WARMUP):
                started[i] = loop.create_future()
                if transactional:
                    t0 = await app.one(jobs, i)
                else:
                    t0 = clock()
                    await jobs.submit("t", {"i": i})
                samples.append((await asyncio.wait_for(started[i], 10) - t0) * 1000)
                del started[i]
        finally:
            await app.close()
    return latency_summary(samples, WARMUP)


async def main(n: int, engine: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if engine in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as d:
            for tx in (False, True):
                url = f"sqlite:///{Path(d) / f'tx{int(tx)}.db'}"
                out[f"sqlite {'in transaction' if tx else 'plain submit'}"] = await measure(
                    url, n, tx
                )
    if engine in ("postgres", "both"):
        for tx in (False, True):
            async with FreshPostgres("tx") as pg:
                out[f"postgres {'in transaction' if tx else 'plain submit'}"] = await measure(
                    pg.url, n, tx
                )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs per measurement")
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.jobs, args.engine)), indent=2))
