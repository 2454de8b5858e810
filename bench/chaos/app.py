"""The application the fault suite's runners serve (``--app bench.chaos.app:jobs``).

Every execution of a handler is recorded in an append-only file of its process
(``$CHAOS_DIR/exec-<pid>.log``): a start line before the handler does anything and an end
line with its outcome when it returns, raises or is cancelled. Each line is one ``write(2)``
on an ``O_APPEND`` descriptor, so it survives a kill -9 of the process the moment the call
returns (the suite kills processes, not the machine, so no ``fsync`` is needed). A start
without an end is an execution its process died in.

Line format (space-separated): ``S job attempt pid wall mono`` and
``E job attempt pid wall mono outcome`` (``ok``, ``err``, ``dead`` or ``cancel``); ``wall`` is
``time.time()`` and ``mono`` is CLOCK_MONOTONIC, the same clock in every process here.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import Any

from shardq import JobError, JobService, RetryPolicy, current_job

#: The handler's job type.
WORK = "chaos.work"

jobs = JobService(
    concurrency=int(os.environ.get("CHAOS_CONCURRENCY", "16")),
    retry=RetryPolicy(base=0.05, cap=0.5, jitter=0),
    drain_timeout=float(os.environ.get("CHAOS_DRAIN_TIMEOUT", "3")),
    handover_timeout=float(os.environ.get("CHAOS_HANDOVER_TIMEOUT", "3")),
)


class Recorder:
    """One process's append-only execution log."""

    def __init__(self, directory: str) -> None:
        self.pid = os.getpid()
        path = os.path.join(directory, f"exec-{self.pid}.log")
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, kind: str, job_id: str, attempt: int, outcome: str = "") -> None:
        """Append one line with both clocks."""
        mono = time.clock_gettime(time.CLOCK_MONOTONIC)
        line = f"{kind} {job_id} {attempt} {self.pid} {time.time():.6f} {mono:.6f}"
        os.write(self._fd, (f"{line} {outcome}" if outcome else line).encode() + b"\n")


@functools.cache
def _recorder_of(pid: int) -> Recorder:
    return Recorder(os.environ["CHAOS_DIR"])


def recorder() -> Recorder:
    """This process's recorder (made on first use, so ``$CHAOS_DIR`` is read in the worker)."""
    return _recorder_of(os.getpid())


@jobs.handler(WORK)
async def work(payload: dict[str, Any]) -> dict[str, Any]:
    """Run for ``ms`` milliseconds; fail while the attempt is at most ``fail``; with ``bad``,
    raise a terminal error (dead-lettered at once)."""
    ctx = current_job()
    rec = recorder()
    rec.write("S", ctx.job_id, ctx.attempt)
    outcome = "cancel"
    try:
        ms = int(payload.get("ms", 0))
        if ms:
            await asyncio.sleep(ms / 1000)
        if payload.get("bad"):
            outcome = "dead"
            raise JobError("Validation", ctx.job_id, message="a job planned to be refused")
        if ctx.attempt <= int(payload.get("fail", 0)):
            outcome = "err"
            raise RuntimeError(f"planned failure of attempt {ctx.attempt}")
        outcome = "ok"
        return {"pid": rec.pid}
    finally:
        rec.write("E", ctx.job_id, ctx.attempt, outcome)
