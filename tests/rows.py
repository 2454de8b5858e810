"""Rows for tests that drive a storage driver directly."""

from __future__ import annotations

from shardq.drivers.base import NewJob


def new_job(i: int, *, shard: int = 0, key: str | None = None, dedupe: str | None = None) -> NewJob:
    """Queued job ``i`` of type ``t``, due at t=1000 ms, with payload ``{"n": i}``."""
    return NewJob(
        id=i, type="t", payload=f'{{"n": {i}}}', priority=2, key=key, shard=shard,
        dedupe_key=dedupe, max_attempts=3, timeout=None, duration="short", batch_id=None,
        run_at=1000, created_at=1000, context=None,
    )  # fmt: skip
