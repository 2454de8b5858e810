"""Settling: what memory does once an outcome is written, or fenced out."""

from __future__ import annotations

import asyncio
from typing import Any

from shardq.clock import FakeClock
from shardq.config import Config
from shardq.drivers.base import Outcome, StartedJob
from shardq.observe import Metrics
from shardq.runner.backlog import Backlog
from shardq.runner.instruments import Instruments
from shardq.runner.outcomes import Outcomes

from .fakes import AllShards, FakeDriver, ref


class _Attempt:
    """What settling reads of an attempt: its job."""

    def __init__(self, job: StartedJob) -> None:
        self.job = job


def started(i: int, key: str | None = None, shard: int = 0) -> StartedJob:
    return StartedJob(i, "t", "{}", 2, key, shard, 1, 3, None, "short", 0, 0, None)


async def make() -> tuple[Outcomes, Backlog, list[tuple[int, str]]]:
    driver: Any = FakeDriver()
    wake = asyncio.Event()
    instruments = Instruments(Metrics())
    backlog = Backlog(Config(), driver, AllShards(), FakeClock(), instruments, wake, wake.set)
    backlog.windows.overflow = [False] * 4
    await backlog.catch_up(0)  # no stored keys: new keys run at once
    seen: list[tuple[int, str]] = []
    outcomes = Outcomes(backlog, instruments, {}, set(), wake.set, lambda i, s: seen.append((i, s)))
    return outcomes, backlog, seen


def ready_ids(backlog: Backlog) -> list[int]:
    return [r.id for q in backlog.windows.ready for r in q]


async def test_a_retried_keyed_job_keeps_the_head_of_its_mailbox() -> None:
    outcomes, backlog, seen = await make()
    backlog.offer([ref(1, key="k"), ref(2, key="k")])
    assert backlog.mailboxes.take(backlog.windows.ready[2].popleft(), 0)
    attempt: Any = _Attempt(started(1, key="k"))
    retry = Outcome(1, 1, "retry", 0, error="E", run_at=0)
    outcomes.settle(retry, attempt, True, 0, None)
    assert ready_ids(backlog) == [1]  # not 2: the retry goes first
    assert seen == [(1, "queued")]


async def test_a_completed_keyed_job_lets_the_next_one_run() -> None:
    outcomes, backlog, seen = await make()
    backlog.offer([ref(1, key="k"), ref(2, key="k")])
    assert backlog.mailboxes.take(backlog.windows.ready[2].popleft(), 0)
    attempt: Any = _Attempt(started(1, key="k"))
    outcomes.settle(Outcome(1, 1, "complete", 0), attempt, True, 0, None)
    assert ready_ids(backlog) == [2] and seen == [(1, "complete")]


async def test_a_fenced_outcome_makes_memory_read_the_key_again() -> None:
    outcomes, backlog, seen = await make()
    backlog.offer([ref(1, key="k"), ref(2, key="k")])
    assert backlog.mailboxes.take(backlog.windows.ready[2].popleft(), 0)
    attempt: Any = _Attempt(started(1, key="k"))
    # Not written: the job was recovered (queued again) meanwhile, ahead of job 2.
    outcomes.settle(Outcome(1, 1, "complete", 0), attempt, False, 0, None)
    assert ready_ids(backlog) == [] and seen == []
    assert 2 not in backlog.known and backlog.mailboxes.boxes["k"].needs_refill()


async def test_a_retry_of_a_shard_that_moved_is_left_to_its_new_owner() -> None:
    outcomes, backlog, _ = await make()
    backlog.offer([ref(1, shard=4)])
    backlog.windows.ready[2].popleft()
    attempt: Any = _Attempt(started(1, shard=4))
    retry = Outcome(1, 1, "retry", 0, error="E", run_at=0)
    outcomes.settle(retry, attempt, True, 0, {5})
    assert ready_ids(backlog) == [] and not backlog.known
