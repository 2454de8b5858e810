"""The application the cluster tests run in worker processes (``--app tests.cluster.app:jobs``)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from shardq import JobService, Rate, RetryPolicy

jobs = JobService(
    concurrency=int(os.environ.get("SHARDQ_TEST_CONCURRENCY", "16")),
    retry=RetryPolicy(base=0.01, cap=0.05, jitter=0),
    drain_timeout=5.0,
    heartbeat=float(os.environ.get("SHARDQ_TEST_HEARTBEAT", "1.0")),
)


@jobs.handler("sleep")
async def sleep(payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``payload["s"]`` seconds; the result names the runner that ran it."""
    await asyncio.sleep(float(payload.get("s", 0)))
    return {"runner": jobs.runner_id}


_LIMIT = int(os.environ.get("SHARDQ_TEST_LIMIT", "0")) or None


@jobs.handler("limited", concurrency=_LIMIT)
async def limited(payload: dict[str, Any]) -> None:
    """Sleep ``payload["s"]`` seconds, writing when it began and ended (wall time) to this
    process's file in ``$SHARDQ_TEST_RECORD``: what ran at once, seen from the handlers."""
    record = os.path.join(os.environ["SHARDQ_TEST_RECORD"], f"{os.getpid()}.log")
    job = str(jobs.runner_id) + ":" + str(payload["i"])
    with open(record, "a") as f:  # noqa: ASYNC230 - a line, flushed at once
        f.write(f"S {job} {time.time()}\n")
    await asyncio.sleep(float(payload.get("s", 0)))
    with open(record, "a") as f:  # noqa: ASYNC230
        f.write(f"E {job} {time.time()}\n")


_RATE = int(os.environ.get("SHARDQ_TEST_RATE", "0"))


@jobs.handler("paced", rate=Rate(_RATE, per=1.0) if _RATE else None)
async def paced(payload: Any) -> None:
    """A job type whose starts are limited to ``$SHARDQ_TEST_RATE`` a second."""
    return None


@jobs.handler("noop")
async def noop(payload: Any) -> None:
    """Do nothing (for throughput measurements)."""
    return None


if os.environ.get("SHARDQ_TEST_VERSION") == "2":

    @jobs.handler("fresh")
    async def fresh(payload: Any) -> str:
        """A job type only the next version of the application handles."""
        return str(jobs.runner_id)
