"""Rows for tests that drive a storage driver directly."""

from __future__ import annotations

from shardq.drivers.base import NewJob


def new_job(
    i: int,
    *,
    shard: int = 0,
    key: str | None = None,
    dedupe: str | None = None,
    priority: int = 2,
    run_at: int = 1000,
    created_at: int = 1000,
    type: str = "t",
) -> NewJob:
    """Queued job ``i`` with payload ``{"n": i}``: by default of type ``t``, priority 2,
    created at t=1000 ms and due then."""
    return NewJob(
        id=i, type=type, payload=f'{{"n": {i}}}', priority=priority, key=key, shard=shard,
        dedupe_key=dedupe, max_attempts=3, timeout=None, duration="short", batch_id=None,
        run_at=run_at, created_at=created_at, context=None,
    )  # fmt: skip
