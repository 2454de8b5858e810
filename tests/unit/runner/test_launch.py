"""A job cancelled (or its shard lost) while its start is being written still reports an
outcome: its task may be cancelled before it has run a single step."""

from __future__ import annotations

import asyncio
from typing import Any

from shardq._internal.attempts import Attempt, AttemptRunner
from shardq.clock import FakeClock
from shardq.config import Config
from shardq.drivers.base import Outcome, StartedJob
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

    def finished(outcome: Outcome, attempt: Attempt) -> None:
        # As the runner wires it: the handler's slot frees, then the outcome waits.
        dispatch.handler_done()
        outcomes.finished(outcome, attempt)

    attempts = AttemptRunner(
        {"t": handler}, RetryPolicy(), metrics, Snowflake(1), [], threads=1,
        finished=finished, clock=clock,
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


async def test_a_job_started_ahead_runs_the_moment_a_handler_slot_frees() -> None:
    release = asyncio.Event()
    begun: list[int] = []
    dispatch, outcomes, running = make([])

    async def slow(payload: Any) -> None:
        begun.append(payload["n"])
        if payload["n"] == 1:
            return
        await release.wait()

    dispatch._attempts._handlers["t"] = slow
    # Concurrency 4: two more are started ahead of the handler slots.
    assert dispatch.free == 6
    dispatch._launch([ref(i) for i in range(1, 6)], [started(i) for i in range(1, 6)], {})
    assert dispatch.handling == 4
    assert running[5].task is None
    # Job 1 ends at once: job 5 takes its slot with no step in between.
    await asyncio.wait({running[1].task}, timeout=5)
    assert running[5].task is not None and dispatch.handling == 4
    await asyncio.sleep(0)
    assert sorted(begun) == [1, 2, 3, 4, 5]
    release.set()
    await asyncio.wait({running[i].task for i in range(2, 6)}, timeout=5)
    assert dispatch.handling == 0
    assert sorted(o.id for o, _ in outcomes.pending) == [1, 2, 3, 4, 5]


async def test_jobs_started_ahead_are_given_back_without_running_when_the_shard_goes() -> None:
    release = asyncio.Event()
    ran: list[int] = []
    dispatch, outcomes, running = make(ran)

    async def slow(payload: Any) -> None:
        ran.append(payload["n"])
        await release.wait()

    dispatch._attempts._handlers["t"] = slow
    dispatch._launch([ref(i) for i in range(1, 6)], [started(i) for i in range(1, 6)], {})
    waiting = running[5]
    Runner._shut_down(waiting)
    dispatch.give_back_waiting()
    assert waiting.task is not None
    await asyncio.wait({waiting.task}, timeout=5)
    assert 5 not in ran
    assert [(o.id, o.kind) for o, _ in outcomes.pending] == [(5, "retry")]
    release.set()
