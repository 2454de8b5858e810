"""Snooze: a handler puts its job off without using an attempt; a key's order holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardq import FakeClock, Snooze, current_job

from .conftest import ServiceFactory


async def test_a_snoozed_job_runs_again_later_under_the_same_attempt(
    make_service: ServiceFactory,
) -> None:
    clock = FakeClock()
    jobs = make_service(clock=clock)
    runs: list[int] = []
    snoozed = asyncio.Event()

    @jobs.handler("poll")
    async def poll(p: Any) -> str:
        runs.append(current_job().attempt)
        if len(runs) == 1:
            raise Snooze(30)
        return "ready"

    jobs.add_listener(lambda job_id, status: status == "queued" and snoozed.set())
    async with jobs:
        job_id = await jobs.submit("poll", {}, max_attempts=1)
        await asyncio.wait_for(snoozed.wait(), timeout=10)
        st = await jobs.status(job_id)
        assert (st.status, st.attempts) == ("queued", 0)
        assert [h.status for h in st.history] == ["queued", "processing", "snoozed"]
        await clock.advance(29.9)
        assert runs == [1]
        await clock.advance(0.1)
        st = await jobs.wait(job_id, timeout=10)
    # max_attempts=1 and it still ran twice: the snooze used no attempt.
    assert (st.status, st.attempts, st.result, runs) == ("complete", 1, "ready", [1, 1])
    assert [h.status for h in st.history][-2:] == ["processing", "complete"]
    text = jobs.metrics.render().decode()
    assert 'shardq_jobs_snoozed_total{priority="normal",type="poll"} 1.0' in text


async def test_a_snoozed_keyed_job_keeps_its_keys_head(make_service: ServiceFactory) -> None:
    clock = FakeClock()
    jobs = make_service(clock=clock)
    order: list[int] = []
    snoozed = asyncio.Event()

    @jobs.handler("step")
    async def step(p: dict[str, int]) -> None:
        if p["i"] == 0 and not snoozed.is_set():
            snoozed.set()
            raise Snooze(60)
        order.append(p["i"])

    async with jobs:
        ids = [await jobs.submit("step", {"i": i}, key="acct") for i in range(3)]
        await asyncio.wait_for(snoozed.wait(), timeout=10)
        others = asyncio.gather(*(jobs.wait(i, timeout=10) for i in ids[1:]))
        await clock.advance(59)
        assert order == []  # the key's later jobs wait behind the snoozed one
        await clock.advance(1)
        await others
    assert order == [0, 1, 2]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), 10**9])
def test_snooze_refuses_what_is_not_a_delay(bad: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        Snooze(bad)
    with pytest.raises(TypeError):
        Snooze("30")  # type: ignore[arg-type]
