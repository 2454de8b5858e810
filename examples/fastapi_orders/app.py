"""The web side: ``uvicorn examples.fastapi_orders.app:app``.

``POST /orders`` inserts an order row and submits its ``receipt.send`` job in one asyncpg
transaction: the job exists if and only if the order commits. ``POST /orders?fail=1`` fails
after both, so the transaction rolls back and neither the row nor the job ever existed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from shardq import JobService
from shardq.contrib.fastapi import dependency, lifespan

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id           BIGSERIAL   PRIMARY KEY,
    email        TEXT        NOT NULL,
    total_cents  BIGINT      NOT NULL,
    receipted_at TIMESTAMPTZ
)
"""


class NewOrder(BaseModel):
    """The body of ``POST /orders``."""

    email: str = Field(min_length=3, max_length=200)
    total_cents: int = Field(ge=0)


def create_app(url: str | None = None) -> FastAPI:
    """The shop on PostgreSQL at ``url`` (default ``$SHARDQ_DATABASE_URL``). Its JobService
    only submits; ``shardq worker`` processes run the jobs."""
    jobs = JobService(url, runner=False)

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        # Runs after shardq has started (and created its tables) on the same database.
        pool = await asyncpg.create_pool(jobs.config.database_url, min_size=1, max_size=5)
        try:
            await pool.execute(SCHEMA)
            app.state.pool = pool
            yield
        finally:
            await pool.close()

    app = FastAPI(title="shop", lifespan=lifespan(jobs, then=own))
    app.state.jobs = jobs
    provide = Depends(dependency(jobs))

    @app.post("/orders", status_code=201)
    async def create_order(
        order: NewOrder, request: Request, fail: bool = False, svc: JobService = provide
    ) -> dict[str, Any]:
        pool: asyncpg.Pool = request.app.state.pool
        async with pool.acquire() as conn, conn.transaction():
            order_id: int = await conn.fetchval(
                "INSERT INTO orders (email, total_cents) VALUES ($1, $2) RETURNING id",
                order.email,
                order.total_cents,
            )
            job_id = await svc.submit(
                "receipt.send",
                {"order_id": order_id, "email": order.email},
                key=f"order:{order_id}",
                dedupe_key=f"receipt:{order_id}",
                conn=conn,
            )
            if fail:
                # Any exception here rolls back the order row and its job together.
                raise HTTPException(
                    500, {"message": "failed after insert and submit", "job": job_id}
                )
        return {"order": order_id, "job": job_id}

    @app.get("/orders/{order_id}")
    async def get_order(order_id: int, request: Request) -> dict[str, Any]:
        pool: asyncpg.Pool = request.app.state.pool
        row = await pool.fetchrow(
            "SELECT id, email, total_cents, receipted_at FROM orders WHERE id = $1", order_id
        )
        if row is None:
            raise HTTPException(404, "no such order")
        return {**dict(row), "receipted": row["receipted_at"] is not None}

    return app


app = create_app()
