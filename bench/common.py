"""Helpers shared by every measurement: clocks, percentiles, fresh databases, results.

This module is imported both by the shardq environment and by the peers' isolated one, so it
depends on the standard library only (``asyncpg`` and ``redis`` are imported where used).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
RESULT_PREFIX = "RESULT "


def clock() -> float:
    """Seconds on CLOCK_MONOTONIC: comparable between processes on one machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation of sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_summary(samples_ms: Sequence[float], warmup: int) -> dict[str, float]:
    """p50/p90/p99/max (ms) of the samples after the first ``warmup``."""
    kept = sorted(samples_ms[warmup:])
    return {
        "n": len(kept),
        "p50_ms": percentile(kept, 0.50),
        "p90_ms": percentile(kept, 0.90),
        "p99_ms": percentile(kept, 0.99),
        "max_ms": kept[-1] if kept else math.nan,
    }


def rate(n: int, seconds: float) -> float:
    """Jobs per second."""
    return n / seconds if seconds > 0 else math.nan


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User plus system CPU time of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_results(name: str, started: str, doc: dict[str, Any]) -> Path:
    """Write ``doc`` to ``bench/results/<name>-<started, compact>.json`` (``started``: an ISO
    UTC time such as 2026-12-01T20:31:40Z); returns the path."""
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{name}-{started.replace('-', '').replace(':', '')}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def emit(result: dict[str, Any]) -> None:
    """Hand a measurement back to the orchestrator (last line of stdout)."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


class FreshPostgres:
    """A new, empty PostgreSQL database for one measurement, dropped afterwards."""

    def __init__(self, prefix: str) -> None:
        self.name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
        self.url = _pg_url(self.name)

    async def __aenter__(self) -> FreshPostgres:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()


def fresh_redis() -> Any:
    """A client on the benchmark's own Redis database, emptied first."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    return client
