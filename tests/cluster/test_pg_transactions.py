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
