"""Fixtures for the cluster tests: runner processes on one fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Wait until ``check()`` returns something truthy (re-checked every 20 ms); return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Worker:
    """One ``shardq worker`` process."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.runner_id: str | None = None
        self.app: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            tail = self.log.read_text().splitlines()[-20:]
            raise AssertionError(
                "worker did not stop within 30 s of SIGTERM; its log ends:\n" + "\n".join(tail)
            ) from None


class Cluster:
    """Runner processes on ``url``, and a connection to look at the database."""

    def __init__(self, url: str, db: asyncpg.Connection, logs: Path) -> None:
        self.url = url
        self.db = db
        self.logs = logs
        self.workers: list[Worker] = []

    async def start_worker(self, concurrency: int = 16) -> Worker:
        """Start a worker and wait until it has joined (its runner row exists)."""
        log = self.logs / f"worker-{len(self.workers)}.log"
        env = dict(os.environ, SHARDQ_TEST_CONCURRENCY=str(concurrency), PYTHONUNBUFFERED="1")
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
                [
                    sys.executable,
                    "-m",
                    "shardq",
                    "--database-url",
                    self.url,
                    "worker",
                    "--app",
                    "tests.cluster.app:jobs",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, log)
        self.workers.append(worker)

        async def joined() -> Any:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{log.read_text()}")
            return await self.db.fetchrow(
                "SELECT id, app FROM shardq_runners WHERE pid = $1", proc.pid
            )

        row = await eventually(joined, what="the worker to join")
        worker.runner_id, worker.app = row["id"], row["app"]
        return worker

    async def owners(self) -> dict[str, int]:
        """Shards served per runner, as recorded in ``shardq_shards``."""
        rows = await self.db.fetch(
            "SELECT owner, count(*) FROM shardq_shards WHERE owner IS NOT NULL GROUP BY owner"
        )
        return {r[0]: r[1] for r in rows}

    async def unfinished(self) -> int:
        """Jobs not yet complete, failed or cancelled."""
        n = await self.db.fetchval(
            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'processing')"
        )
        return int(n)

    def stop_all(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGKILL)
                w.proc.wait(10)


@pytest.fixture
async def cluster(pg_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A fresh database (migrated) and a way to run workers on it; workers die afterwards."""
    from shardq.drivers.postgres import PostgresDriver

    driver = PostgresDriver(pg_url, runner=False)
    await driver.open()
    await driver.close()
    db = await asyncpg.connect(pg_url)
    c = Cluster(pg_url, db, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()
        await db.close()
