"""The runnable examples under ``examples/``, driven end to end on real PostgreSQL: an
endpoint that creates a row and a job in one transaction, a rollback that leaves neither,
and a ``shardq worker`` process that runs the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.cluster.conftest import eventually

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
SHARDQ = [sys.executable, "-m", "shardq"]
APP = "examples.fastapi_orders.jobs:jobs"


@pytest.fixture
async def worker(pg_url: str, tmp_path: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A ``shardq worker`` process running the FastAPI example's handlers on ``pg_url``,
    started once it has joined and stopped (drained) afterwards."""
    log = tmp_path / "worker.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("SHARDQ_DATABASE_URL", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            [*SHARDQ, "--database-url", pg_url, "worker", "--app", APP],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    db = await asyncpg.connect(pg_url)

    async def joined() -> Any:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{log.read_text()}")
        exists = await db.fetchval("SELECT to_regclass('shardq_runners') IS NOT NULL")
        return exists and await db.fetchval(
            "SELECT count(*) FROM shardq_runners WHERE pid = $1", proc.pid
        )

    try:
        await eventually(joined, what="the worker to join")
        yield proc
    finally:
        await db.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 0, log.read_text()


async def test_fastapi_orders_commit_runs_the_job_and_rollback_leaves_nothing(
    pg_url: str, worker: subprocess.Popen[bytes]
) -> None:
    from examples.fastapi_orders.app import create_app

    app = create_app(pg_url)
    jobs = app.state.jobs
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
            order = {"email": "a@b.c", "total_cents": 1250}
            r = await c.post("/orders", json=order)
            assert r.status_code == 201, r.text
            committed = r.json()

            r = await c.post("/orders", params={"fail": "1"}, json=order)
            assert r.status_code == 500, r.text
            lost_job = r.json()["detail"]["job"]

            async def receipted() -> bool:
                got = await c.get(f"/orders/{committed['order']}")
                return bool(got.json()["receipted"])

            await eventually(receipted, what="the committed order to be receipted")
        done = await jobs.wait(committed["job"], timeout=20)
        assert done.status == "complete", done
        assert done.result == {"order_id": committed["order"], "updated": 1}
        assert await jobs.dead_letters(limit=10) == []

    db = await asyncpg.connect(pg_url)
    try:
        orders = await db.fetch("SELECT id FROM orders ORDER BY id")
        job_ids = await db.fetch("SELECT id FROM jobs")
    finally:
        await db.close()
    # The rolled-back order and its job never existed: one row and one job in all.
    assert [o["id"] for o in orders] == [committed["order"]]
    assert [str(j["id"]) for j in job_ids] == [committed["job"]]
    assert lost_job != committed["job"]
