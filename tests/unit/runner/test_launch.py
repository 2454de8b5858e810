"""A job cancelled (or its shard lost) while its start is being written still reports an
outcome: its task may be cancelled before it has run a single step."""

from __future__ import annotations

import asyncio
from typing import Any

from shardq._internal.attempts import AttemptRunner
from shardq.clock import FakeClock
from shardq.config import Config
from shardq.drivers.base import StartedJob
from shardq.ids import Snowflake
from shardq.observe import Metrics
from shardq.retry import RetryPolicy
from shardq.runner.backlog import Backlog
from shardq.runner.dispatch import Dispatcher
from shardq.runner.instruments import Instruments
from shardq.runner.outcomes import Outcomes
from shardq.runner.runner import Runner

from .fakes import AllShards, FakeDriver, ref


def make(ran: list[int]) -> tuple[Dispatcher, Outcomes, dict[int, Any]]:
    driver: Any = FakeDriver()
    clock = FakeClock()
    wake = asyncio.Event()
    metrics = Metrics()
    instruments = Instruments(metrics)
    backlog = Backlog(
        Config(concurrency=4), driver, AllShards(), clock, instruments, wake, wake.set
    )
    running: dict[int, Any] = {}
    cancel: set[int] = set()
    outcomes = Outcomes(backlog, instruments, running, cancel, wake.set, None)

    async def handler(payload: Any) -> None:
        ran.append(payload["n"])

    attempts = AttemptRunner(
        {"t": handler}, RetryPolicy(), metrics, Snowflake(1), [], threads=1,
        finished=outcomes.finished, clock=clock,
    )  # fmt: skip
    dispatch = Dispatcher(
        4, driver, AllShards(), clock, Snowflake(1), backlog, outcomes, attempts,
        instruments, running, cancel, wake,
    )  # fmt: skip
    return dispatch, outcomes, running


def started(i: int) -> StartedJob:
    return StartedJob(i, "t", f'{{"n": {i}}}', 2, None, 0, 1, 3, None, "short", 0, 0, None)


async def test_a_cancel_that_arrives_while_the_start_is_written_cancels_the_job() -> None:
    ran: list[int] = []
    dispatch, outcomes, running = make(ran)
    dispatch._backlog.known.add(1)
    # Not running yet: the cancel is kept for when the start is confirmed.
    assert not dispatch.interrupt(1)
    dispatch._launch([ref(1)], [started(1)], {})
    await asyncio.wait({running[1].task}, timeout=5)
    assert ran == []
    assert [(o.id, o.kind) for o, _ in outcomes.pending] == [(1, "cancelled")]


async def test_a_shard_lost_before_the_handler_began_queues_the_job_again() -> None:
    ran: list[int] = []
    dispatch, outcomes, running = make(ran)
    dispatch._launch([ref(2)], [started(2)], {})
    attempt = running[2]
    Runner._shut_down(attempt)  # before the task's first step
    assert attempt.task is not None
    await asyncio.wait({attempt.task}, timeout=5)
    assert ran == []
    assert [(o.id, o.kind) for o, _ in outcomes.pending] == [(2, "retry")]
