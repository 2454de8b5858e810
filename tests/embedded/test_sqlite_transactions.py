"""Submitting in an application's own SQLite transaction: the commit wakes the runner, in
whichever process or thread the transaction runs and however it ends."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

import pytest

from shardq import JobError, JobService
from shardq.drivers.sqlite.driver import path_from_url


def _runner(url: str, ran: asyncio.Queue[Any]) -> JobService:
    jobs = JobService(url)

    @jobs.handler("t")
    async def t(p: Any) -> None:
        ran.put_nowait(p)

    return jobs


async def test_a_sync_submit_in_a_thread_of_its_own_connection(sqlite_url: str) -> None:
    ran: asyncio.Queue[Any] = asyncio.Queue()
    async with _runner(sqlite_url, ran):
        done = threading.Event()

        def app() -> None:
            with JobService(sqlite_url, runner=False) as web:
                conn = sqlite3.connect(path_from_url(sqlite_url))
                conn.execute("CREATE TABLE orders (id INTEGER)")
                with conn:  # commits on leaving
                    conn.execute("INSERT INTO orders VALUES (1)")
                    web.submit_sync("t", {"via": "thread"}, conn=conn)
                conn.close()
            done.set()

        thread = threading.Thread(target=app)
        thread.start()
        assert await asyncio.wait_for(ran.get(), 10) == {"via": "thread"}
        await asyncio.to_thread(thread.join, 10)
        assert done.is_set()


async def test_a_submitter_without_the_runner_wakes_it_at_commit(sqlite_url: str) -> None:
    ran: asyncio.Queue[Any] = asyncio.Queue()
    async with _runner(sqlite_url, ran), JobService(sqlite_url, runner=False) as web:
        conn = sqlite3.connect(path_from_url(sqlite_url))
        conn.execute("CREATE TABLE orders (id INTEGER)")
        conn.execute("INSERT INTO orders VALUES (1)")
        await web.submit("t", {"n": 1}, conn=conn)
        assert ran.empty()
        conn.commit()
        assert await asyncio.wait_for(ran.get(), 10) == {"n": 1}
        conn.close()


async def test_savepoints_end_and_statement_level_commits(sqlite_url: str) -> None:
    ran: asyncio.Queue[Any] = asyncio.Queue()
    async with _runner(sqlite_url, ran) as jobs:
        conn = sqlite3.connect(path_from_url(sqlite_url), isolation_level=None)
        conn.execute("CREATE TABLE orders (id INTEGER)")
        # A transaction begun by a savepoint ends with its RELEASE.
        conn.execute("SAVEPOINT outer_sp")
        await jobs.submit("t", {"n": 1}, conn=conn)
        conn.execute("RELEASE outer_sp")
        assert await asyncio.wait_for(ran.get(), 10) == {"n": 1}
        # Rolling back to a savepoint drops only what came after it.
        conn.execute("BEGIN")
        await jobs.submit("t", {"n": 2}, conn=conn)
        conn.execute("SAVEPOINT inner_sp")
        dropped = await jobs.submit("t", {"n": 3}, conn=conn)
        conn.execute("ROLLBACK TO inner_sp")
        conn.execute("END")
        assert await asyncio.wait_for(ran.get(), 10) == {"n": 2}
        marker = await jobs.submit("t", {"n": 4})
        await jobs.wait(marker, timeout=10)
        assert await asyncio.wait_for(ran.get(), 10) == {"n": 4}
        assert ran.empty()
        assert (await jobs.stats()).by_status["complete"] == 3
        assert not [j for j in await jobs.list_jobs() if j.id == dropped]
        conn.close()


async def test_a_sqlalchemy_session_on_the_same_file(sqlite_url: str) -> None:
    pytest.importorskip("sqlalchemy")
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    ran: asyncio.Queue[Any] = asyncio.Queue()
    engine = create_engine(sqlite_url)
    async with _runner(sqlite_url, ran) as jobs:
        with Session(engine) as session:
            session.execute(text("CREATE TABLE orders (id INTEGER)"))
            session.commit()
            with pytest.raises(JobError) as err:
                await jobs.submit("t", {"n": 0}, conn=session)  # no transaction yet
            assert err.value.reason == "Validation"
            session.execute(text("INSERT INTO orders VALUES (1)"))
            await jobs.submit("t", {"n": 1}, conn=session)
            session.commit()
        assert await asyncio.wait_for(ran.get(), 10) == {"n": 1}
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO orders VALUES (2)"))
            await jobs.submit("t", {"n": 2}, conn=conn)
        assert await asyncio.wait_for(ran.get(), 10) == {"n": 2}
    engine.dispose()
