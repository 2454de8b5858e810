"""Submitting inside the application's own transaction (``conn=``), on both engines: the job
exists if and only if the transaction commits, and runs as soon as it has."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from shardq import JobError, JobService
from shardq.drivers.sqlite.driver import path_from_url
from shardq.models import JobPayload

from .conftest import ServiceFactory


class AppDb:
    """The application's own connection to the job database, and a table of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite:")
        self.conn: Any = None
        self._tx: Any = None

    async def open(self) -> None:
        if self.sqlite:
            self.conn = sqlite3.connect(path_from_url(self.url))
            self.conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
            self.conn.commit()
        else:
            self.conn = await asyncpg.connect(self.url)
            await self.conn.execute("CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY)")

    async def close(self) -> None:
        if self.sqlite:
            self.conn.close()
        else:
            await self.conn.close()

    async def begin_with_order(self, order_id: int) -> Any:
        """Open a transaction that writes an order row; the connection to submit on."""
        if self.sqlite:
            self.conn.execute("INSERT INTO orders VALUES (?)", (order_id,))
        else:
            self._tx = self.conn.transaction()
            await self._tx.start()
            await self.conn.execute("INSERT INTO orders VALUES ($1)", order_id)
        return self.conn

    async def commit(self) -> None:
        if self.sqlite:
            self.conn.commit()
        else:
            await self._tx.commit()

    async def rollback(self) -> None:
        if self.sqlite:
            self.conn.rollback()
        else:
            await self._tx.rollback()

    async def orders(self) -> int:
        if self.sqlite:
            return int(self.conn.execute("SELECT count(*) FROM orders").fetchone()[0])
        return int(await self.conn.fetchval("SELECT count(*) FROM orders"))


@dataclass
class Setup:
    jobs: JobService
    db: AppDb
    seen: list[Any]


@pytest.fixture
async def setup(make_service: ServiceFactory, database_url: str) -> AsyncIterator[Setup]:
    jobs = make_service()
    seen: list[Any] = []

    @jobs.handler("receipt.send")
    async def send(p: Any) -> Any:
        seen.append(p)
        return p

    async with jobs:
        db = AppDb(database_url)
        await db.open()
        try:
            yield Setup(jobs, db, seen)
        finally:
            await db.close()


async def _total(jobs: JobService) -> int:
    return sum((await jobs.stats()).by_status.values())


async def test_a_job_submitted_in_a_committed_transaction_runs(setup: Setup) -> None:
    jobs, db = setup.jobs, setup.db
    conn = await db.begin_with_order(1)
    job_id = await jobs.submit("receipt.send", {"order": 1}, conn=conn, priority="high")
    with pytest.raises(JobError) as err:
        await jobs.status(job_id)  # not visible to anyone else before the commit
    assert err.value.reason == "NotFound"
    await db.commit()
    st = await jobs.wait(job_id, timeout=10)
    assert st.status == "complete" and st.result == {"order": 1}
    assert st.job is not None and st.job.priority == "high"
    assert setup.seen == [{"order": 1}] and await db.orders() == 1


async def test_a_rolled_back_transaction_leaves_no_job_and_runs_nothing(setup: Setup) -> None:
    jobs, db = setup.jobs, setup.db
    conn = await db.begin_with_order(1)
    rolled = await jobs.submit("receipt.send", {"order": 1}, conn=conn)
    ids = await jobs.submit("receipt.send", [{"order": 2}, {"order": 3}], conn=conn)
    await db.rollback()
    # A job submitted after the rollback runs; by then the rolled-back ones would have too.
    marker = await jobs.submit("receipt.send", {"order": 4})
    await jobs.wait(marker, timeout=10)
    for job_id in (rolled, *ids):
        with pytest.raises(JobError) as err:
            await jobs.status(job_id)
        assert err.value.reason == "NotFound"
    assert setup.seen == [{"order": 4}] and await _total(jobs) == 1
    assert await db.orders() == 0


async def test_dedupe_inside_a_transaction(setup: Setup) -> None:
    jobs, db = setup.jobs, setup.db
    held = await jobs.submit("receipt.send", {"n": 0}, dedupe_key="held", delay=3600)
    conn = await db.begin_with_order(1)
    first = await jobs.submit("receipt.send", {"n": 1}, dedupe_key="order:1", conn=conn)
    again = await jobs.submit("receipt.send", {"n": 2}, dedupe_key="order:1", conn=conn)
    assert again == first
    assert await jobs.submit("receipt.send", {"n": 3}, dedupe_key="held", conn=conn) == held
    batch = await jobs.submit("receipt.send", [{"n": 4}, {"n": 5}], dedupe_key="b", conn=conn)
    await db.commit()
    assert await jobs.submit("receipt.send", {"n": 6}, dedupe_key="order:1") == first
    assert await jobs.submit("receipt.send", [{"n": 7}, {"n": 8}], dedupe_key="b") == batch
    for job_id in (first, *batch):
        await jobs.wait(job_id, timeout=10)
    assert sorted(p["n"] for p in setup.seen) == [1, 4, 5]
    assert await _total(jobs) == 4


async def test_a_batch_of_one_key_keeps_its_order(setup: Setup) -> None:
    jobs, db = setup.jobs, setup.db
    conn = await db.begin_with_order(1)
    specs = [JobPayload("receipt.send", {"i": i}, key="acct:1") for i in range(20)]
    results = await jobs.submit_many(specs, conn=conn)
    assert not any(r.duplicate for r in results)
    await db.commit()
    for r in results:
        await jobs.wait(r.job_id, timeout=10)
    assert setup.seen == [{"i": i} for i in range(20)]


async def test_wrong_connections_are_refused_and_store_nothing(setup: Setup, tmp_path: Any) -> None:
    jobs, db = setup.jobs, setup.db
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.execute("INSERT INTO t VALUES (1)")  # in a transaction, on another file
    wrong: list[object] = ["conn", object(), other]
    if db.sqlite:
        wrong.append(db.conn)  # the right file, but no transaction open
    else:
        wrong.append(db.conn)  # no transaction open
        wrong.append(sqlite3.connect(":memory:"))
    try:
        for conn in wrong:
            with pytest.raises(JobError) as err:
                await jobs.submit("receipt.send", {"n": 1}, conn=conn)
            assert err.value.reason == "Validation", conn
            assert "conn" in str(err.value)
    finally:
        other.close()
    assert await _total(jobs) == 0


async def test_a_bad_payload_in_a_transaction_leaves_the_transaction_usable(
    setup: Setup,
) -> None:
    jobs, db = setup.jobs, setup.db
    conn = await db.begin_with_order(1)
    with pytest.raises(JobError):
        await jobs.submit("receipt.send", {"n": float("nan")}, conn=conn)
    job_id = await jobs.submit("receipt.send", {"n": 1}, conn=conn)
    await db.commit()
    assert (await jobs.wait(job_id, timeout=10)).status == "complete"
    assert await db.orders() == 1


async def test_a_typed_task_submits_in_a_transaction(setup: Setup) -> None:
    jobs, db = setup.jobs, setup.db

    @jobs.task("double")
    async def double(n: int) -> int:
        return n * 2

    conn = await db.begin_with_order(1)
    h = await double.submit(21, conn=conn)
    await db.commit()
    assert await h.result(timeout=10) == 42


async def test_many_transactions_committing_at_once_all_run(setup: Setup) -> None:
    jobs, db = setup.jobs, setup.db
    ids = []
    for i in range(30):
        conn = await db.begin_with_order(i)
        ids.append(await jobs.submit("receipt.send", {"i": i}, conn=conn))
        await db.commit()
    done = await asyncio.gather(*(jobs.wait(i, timeout=10) for i in ids))
    assert all(st.status == "complete" for st in done)
