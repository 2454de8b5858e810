"""A runner that starts (or restarts) never lets a key's new job overtake its stored ones."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .conftest import ServiceFactory


def _gate(fn: Callable[..., Awaitable[Any]], opened: asyncio.Event) -> Callable[..., Any]:
    """``fn``, held until ``opened`` is set."""

    async def gated(*args: Any, **kwargs: Any) -> Any:
        await asyncio.wait_for(opened.wait(), timeout=10)
        return await fn(*args, **kwargs)

    return gated


async def test_a_job_arriving_during_catch_up_waits_for_its_keys_stored_jobs(
    make_service: ServiceFactory,
) -> None:
    # Two jobs of a key are stored while no runner runs.
    async with make_service(runner=False) as submitter:
        older = [
            await submitter.submit("step", {"i": i}, key="acct", priority="low") for i in (1, 2)
        ]

    jobs = make_service(concurrency=8)
    order: list[int] = []

    @jobs.handler("step")
    async def step(p: dict[str, Any]) -> None:
        order.append(p["i"])

    await jobs.start()
    try:
        # The runner has not yet read which keys have stored jobs when a new job of the key
        # arrives (critical, so it would be started beside the step reading them).
        opened = asyncio.Event()
        driver: Any = jobs.driver
        driver.load_keys = _gate(driver.load_keys, opened)
        newer = await jobs.submit("step", {"i": 3}, key="acct", priority="critical")
        opened.set()
        for job_id in [*older, newer]:
            assert (await jobs.wait(job_id, timeout=20)).status == "complete"
    finally:
        await jobs.stop()
    assert order == [1, 2, 3]
