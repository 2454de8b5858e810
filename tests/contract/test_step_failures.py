"""A write that storage refuses or cannot take never stops the runner, and never passes
unseen: the refused row is isolated, an unreachable store is reported unhealthy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shardq import JobService
from shardq.drivers.base import Outcome

from .conftest import ServiceFactory


async def _until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _step_failures(jobs: JobService) -> float:
    value = jobs.metrics.registry.get_sample_value("shardq_runner_step_failures_total")
    return float(value or 0.0)


def _wrap_advance(jobs: JobService, refuse: Callable[[Sequence[Outcome]], None]) -> None:
    """Make the real driver's ``advance`` call ``refuse(outcomes)`` first (it may raise)."""
    driver: Any = jobs.driver
    advance: Callable[..., Awaitable[Any]] = driver.advance

    async def checked(outcomes: Sequence[Outcome], *args: Any) -> Any:
        refuse(outcomes)
        return await advance(outcomes, *args)

    driver.advance = checked


async def test_an_outcome_storage_refuses_fails_its_job_and_the_rest_go_on(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service(concurrency=4)
    gate = asyncio.Event()

    @jobs.handler("t")
    async def t(p: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return p

    async with jobs:
        poison = await jobs.submit("t", {"n": 0})
        poison_id = int(poison)

        def refuse(outcomes: Sequence[Outcome]) -> None:
            if any(o.id == poison_id and o.kind == "complete" for o in outcomes):
                raise ValueError("storage cannot take this row: \x00 \udcff")

        _wrap_advance(jobs, refuse)
        others = await jobs.submit("t", [{"n": i} for i in range(1, 6)])
        gate.set()
        for job_id in others:
            assert (await jobs.wait(job_id, timeout=20)).status == "complete"
        st = await jobs.wait(poison, timeout=20)
        assert st.status == "failed"
        assert st.error is not None and "could not be stored" in st.error
        assert "storage cannot take this row" in st.error
        [dead] = await jobs.dead_letters()
        assert dead.job_id == poison and dead.reason == "Processing"
        # Later jobs still run.
        late = await jobs.submit("t", {"n": 9})
        assert (await jobs.wait(late, timeout=20)).status == "complete"
        assert jobs.health_problem() is None
        assert b"shardq_outcomes_refused_total 1.0" in jobs.metrics.render()
        # The batch holding the refused outcome failed twice; then its outcomes were
        # written one by one, and no step failed again.
        assert _step_failures(jobs) == 2


async def test_an_unreachable_store_is_reported_and_loses_no_outcome(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service(concurrency=4)
    down = True

    @jobs.handler("t")
    async def t(p: dict[str, Any]) -> dict[str, Any]:
        return p

    def refuse(outcomes: Sequence[Outcome]) -> None:
        if down and outcomes:
            raise ConnectionError("storage is down")

    async with jobs:
        _wrap_advance(jobs, refuse)
        ids = await jobs.submit("t", [{"n": i} for i in range(3)])
        await _until(lambda: jobs.health_problem() is not None, "the runner to report failing")
        problem, failures = jobs.health_problem(), _step_failures(jobs)
        assert problem is not None and "storage is down" in problem
        # Every failed step is counted: as many as the problem reports, no step between
        # them having succeeded.
        assert failures >= 3 and f"last {failures:.0f} steps failed" in problem
        down = False
        for job_id in ids:
            st = await jobs.wait(job_id, timeout=30)
            assert st.status == "complete"
            assert st.result == {"n": ids.index(job_id)}
        await _until(lambda: jobs.health_problem() is None, "the runner to recover")
        assert await jobs.dead_letters() == []
