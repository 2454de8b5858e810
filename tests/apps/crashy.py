"""An application for restart tests: its behaviour is chosen by environment variables.

SHARDQ_TEST_MODE=hang: "work" jobs record that they started, then hang (so the process can
be killed mid-run); "flaky" jobs fail their first attempt (retried after RETRY_S seconds).
SHARDQ_TEST_MODE=run: every job completes at once, recording the start.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from shardq import Config, JobService, RetryPolicy, current_job

MODE = os.environ.get("SHARDQ_TEST_MODE", "run")
STARTS = os.environ.get("SHARDQ_TEST_STARTS", "/dev/null")
RETRY_S = float(os.environ.get("SHARDQ_TEST_RETRY_S", "2"))

jobs = JobService(
    config=Config(
        database_url=os.environ.get("SHARDQ_DATABASE_URL", "sqlite:///crashy.db"),
        concurrency=int(os.environ.get("SHARDQ_TEST_CONCURRENCY", "8")),
        retry=RetryPolicy(base=RETRY_S, cap=RETRY_S, jitter=0),
    )
)


def _record() -> None:
    ctx = current_job()
    with open(STARTS, "a") as f:
        f.write(f"{ctx.job_id} {ctx.attempt} {time.time():.3f}\n")
        f.flush()


@jobs.handler("work")
async def work(p: Any) -> str:
    _record()
    if MODE == "hang":
        await asyncio.Event().wait()
    return "done"


@jobs.handler("flaky")
async def flaky(p: Any) -> str:
    _record()
    if current_job().attempt == 1:
        raise RuntimeError("first attempt fails")
    return "recovered"
