"""Submitting in an application's own PostgreSQL transaction, on a pool's connection, from a
process part that runs no jobs: the notification commits with the transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from shardq import JobError, JobService


async def test_a_pooled_connection_in_a_web_process(pg_url: str) -> None:
    ran: asyncio.Queue[Any] = asyncio.Queue()
    runner = JobService(pg_url)

    @runner.handler("t")
    async def t(p: Any) -> None:
        ran.put_nowait(p)

    async with runner, JobService(pg_url, runner=False) as web:
        pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await conn.execute("CREATE TABLE orders (id bigint)")
                async with conn.transaction():
                    await conn.execute("INSERT INTO orders VALUES (1)")
                    await web.submit("t", {"n": 1}, conn=conn, key="order:1")
                    await web.submit("t", [{"n": 2}, {"n": 3}], conn=conn, key="order:1")
                    assert ran.empty()
                assert [await asyncio.wait_for(ran.get(), 10) for _ in range(3)] == [
                    {"n": 1},
                    {"n": 2},
                    {"n": 3},
                ]
                with pytest.raises(JobError) as err:
                    await web.submit("t", {"n": 4}, conn=conn)  # no transaction open
                assert err.value.reason == "Validation"
        finally:
            await pool.close()


async def _runner_and_queue(pg_url: str) -> tuple[JobService, asyncio.Queue[Any]]:
    ran: asyncio.Queue[Any] = asyncio.Queue()
    runner = JobService(pg_url)

    @runner.handler("t")
    async def t(p: Any) -> None:
        ran.put_nowait(p)

    return runner, ran


async def test_psycopg_async_and_sync_connections(pg_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    runner, ran = await _runner_and_queue(pg_url)
    async with runner as jobs:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            await conn.execute("CREATE TABLE orders (id bigint)")
            await conn.commit()
            await conn.execute("INSERT INTO orders VALUES (1)")
            first = await jobs.submit("t", {"n": 1}, conn=conn, dedupe_key="d")
            assert await jobs.submit("t", {"n": 9}, conn=conn, dedupe_key="d") == first
            await jobs.submit("t", [{"n": 2}, {"n": 3}], conn=conn, key="k")
            assert ran.empty()
            await conn.commit()
            got = [await asyncio.wait_for(ran.get(), 10) for _ in range(3)]
            assert sorted(p["n"] for p in got) == [1, 2, 3]
            await conn.execute("INSERT INTO orders VALUES (2)")
            await jobs.submit("t", {"n": 4}, conn=conn)
            await conn.rollback()
            with pytest.raises(JobError) as err:
                await jobs.submit("t", {"n": 5}, conn=conn)  # idle: no transaction open
            assert err.value.reason == "Validation"

        def sync_app() -> str | list[str]:
            with psycopg.connect(pg_url) as conn:
                conn.execute("INSERT INTO orders VALUES (3)")
                job_id = jobs.submit_sync("t", {"n": 6}, conn=conn)
                conn.commit()
                return job_id

        job_id = await asyncio.to_thread(sync_app)
        assert isinstance(job_id, str)
        assert (await jobs.wait(job_id, timeout=10)).status == "complete"
        assert ran.get_nowait() == {"n": 6}
        assert (await jobs.stats()).by_status["complete"] == 4


@pytest.mark.parametrize("dialect", ["asyncpg", "psycopg"])
async def test_sqlalchemy_async_sessions_and_connections(pg_url: str, dialect: str) -> None:
    pytest.importorskip("sqlalchemy")
    pytest.importorskip(dialect)
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    runner, ran = await _runner_and_queue(pg_url)
    engine = create_async_engine(pg_url.replace("postgresql://", f"postgresql+{dialect}://"))
    try:
        async with runner as jobs:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE orders (id bigint)"))
            async with engine.begin() as conn:
                await jobs.submit("t", {"via": "connection"}, conn=conn)  # before any statement
                await conn.execute(text("INSERT INTO orders VALUES (1)"))
            assert await asyncio.wait_for(ran.get(), 10) == {"via": "connection"}
            async with AsyncSession(engine) as session, session.begin():
                await session.execute(text("INSERT INTO orders VALUES (2)"))
                await jobs.submit("t", {"via": "session"}, conn=session)
            assert await asyncio.wait_for(ran.get(), 10) == {"via": "session"}
            async with AsyncSession(engine) as session:
                with pytest.raises(JobError) as err:
                    await jobs.submit("t", {"via": "none"}, conn=session)
                assert err.value.reason == "Validation"
                async with session.begin():
                    await session.execute(text("INSERT INTO orders VALUES (3)"))
                    await jobs.submit("t", {"via": "rolled back"}, conn=session)
                    await session.rollback()
            marker = await jobs.submit("t", {"via": "marker"})
            await jobs.wait(marker, timeout=10)
            assert await asyncio.wait_for(ran.get(), 10) == {"via": "marker"}
            assert (await jobs.stats()).by_status["complete"] == 3
    finally:
        await engine.dispose()
