"""The runnable examples under ``examples/``, driven end to end on real PostgreSQL: an
endpoint that creates a row and a job in one transaction, a rollback that leaves neither,
and a real worker process that runs the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from shardq import JobService
from tests.cluster.conftest import eventually

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
DJANGO_MANAGE = [sys.executable, "examples/django_shop/manage.py"]


def _env(url: str) -> dict[str, str]:
    return dict(os.environ, SHARDQ_DATABASE_URL=url, PYTHONUNBUFFERED="1")


def _output(log: Path) -> str:
    """What a worker printed (for a failing assertion's message)."""
    return log.read_text()


@asynccontextmanager
async def running_worker(command: Sequence[str], url: str, log: Path) -> AsyncIterator[None]:
    """Run the worker ``command`` on ``url`` until the block ends, once it has joined (its
    runner row exists); then stop it with SIGTERM and check that it drained cleanly."""
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            command, cwd=ROOT, env=_env(url), stdout=out, stderr=subprocess.STDOUT
        )
    db = await asyncpg.connect(url)

    async def joined() -> Any:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{_output(log)}")
        if not await db.fetchval("SELECT to_regclass('shardq_runners') IS NOT NULL"):
            return False
        return await db.fetchval("SELECT count(*) FROM shardq_runners WHERE pid = $1", proc.pid)

    try:
        await eventually(joined, what="the worker to join")
        yield
    finally:
        await db.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, _output(log)


async def _rows(url: str, orders: str) -> tuple[list[int], list[str]]:
    """The ids of the orders in table ``orders``, and of every shardq job."""
    db = await asyncpg.connect(url)
    try:
        order_ids = [r["id"] for r in await db.fetch(f"SELECT id FROM {orders} ORDER BY id")]
        job_ids = [str(r["id"]) for r in await db.fetch("SELECT id FROM jobs ORDER BY id")]
    finally:
        await db.close()
    return order_ids, job_ids


async def test_fastapi_orders_commit_runs_the_job_and_rollback_leaves_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    from examples.fastapi_orders.app import create_app

    app = create_app(pg_url)
    jobs: JobService = app.state.jobs
    worker = [sys.executable, "-m", "shardq", "worker"]
    worker += ["--app", "examples.fastapi_orders.jobs:jobs"]
    async with (
        app.router.lifespan_context(app),
        running_worker(worker, pg_url, tmp_path / "worker.log"),
    ):
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

    # The rolled-back order and its job never existed: one row and one job in all.
    orders, job_ids = await _rows(pg_url, "orders")
    assert orders == [committed["order"]]
    assert job_ids == [committed["job"]] and lost_job not in job_ids


async def test_django_shop_commit_runs_the_task_and_rollback_leaves_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("django")
    migrate = subprocess.run(  # noqa: ASYNC221 - setup, before anything else runs
        [*DJANGO_MANAGE, "migrate", "-v", "0"], cwd=ROOT, env=_env(pg_url),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    worker = [*DJANGO_MANAGE, "shardq", "worker"]
    async with running_worker(worker, pg_url, tmp_path / "worker.log"):
        run = subprocess.run(  # noqa: ASYNC221 - the scenario's process must finish first
            [sys.executable, "-m", "tests.examples.django_scenario"], cwd=ROOT,
            env=_env(pg_url), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        seen = json.loads(run.stdout.splitlines()[-1])
        assert seen["committed"]["status"] == 201, seen
        assert seen["rolled back"]["status"] == 500, seen
        assert seen["bad body"] == 400
        committed = seen["committed"]["body"]
        db = await asyncpg.connect(pg_url)
        try:

            async def receipted() -> bool:
                sql = "SELECT receipted_at IS NOT NULL FROM shop_order WHERE id = $1"
                return bool(await db.fetchval(sql, committed["order"]))

            await eventually(receipted, what="the committed order to be receipted")
        finally:
            await db.close()

    async with JobService(pg_url, runner=False) as jobs:
        done = await jobs.wait(committed["task"], timeout=20)
        assert done.status == "complete", done
        assert await jobs.dead_letters(limit=10) == []
    orders, job_ids = await _rows(pg_url, "shop_order")
    assert orders == [committed["order"]]
    assert job_ids == [committed["task"]]
    assert seen["rolled back"]["body"]["task"] not in job_ids
