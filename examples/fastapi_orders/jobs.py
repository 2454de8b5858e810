"""The worker side: the ``receipt.send`` task, run by
``shardq worker --app examples.fastapi_orders.jobs:jobs``.

The database URL comes from ``--database-url`` or ``$SHARDQ_DATABASE_URL``; the ``orders``
table lives in the same PostgreSQL database as shardq's own tables, which is what lets an
order and its job commit together.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from shardq import JobService

jobs = JobService()


@dataclass
class Receipt:
    """What the receipt job needs to know about an order."""

    order_id: int
    email: str


@jobs.task("receipt.send", max_attempts=5, timeout=30)
async def send_receipt(r: Receipt) -> dict[str, int]:
    """Send the receipt (here: mark the order receipted) and say which order it was for."""
    # One connection per job keeps the example short; an application would use a pool.
    conn = await asyncpg.connect(jobs.config.database_url)
    try:
        done = await conn.execute(
            "UPDATE orders SET receipted_at = now() WHERE id = $1 AND receipted_at IS NULL",
            r.order_id,
        )
    finally:
        await conn.close()
    # A retried job finds the order already receipted: the UPDATE is a no-op, not an error.
    return {"order_id": r.order_id, "updated": int(done.split()[-1])}
