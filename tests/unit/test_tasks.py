"""Stopping a background task never swallows a cancel meant for the one who stops it."""

from __future__ import annotations

import asyncio

import pytest

from shardq._internal.tasks import cancel_and_wait


async def _slow_to_stop(released: asyncio.Event, stopping: asyncio.Event) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        stopping.set()
        # Closing a connection, say: the task takes a while to end once cancelled.
        await asyncio.shield(released.wait())


async def test_a_cancel_of_the_caller_while_it_waits_is_raised() -> None:
    released, stopping = asyncio.Event(), asyncio.Event()
    child = asyncio.create_task(_slow_to_stop(released, stopping))
    await asyncio.sleep(0)

    async def owner() -> str:
        await cancel_and_wait(child)
        # Without the fix the owner's cancel is eaten here and it carries on.
        await asyncio.Event().wait()
        return "never"

    caller = asyncio.create_task(owner())
    await asyncio.wait_for(stopping.wait(), 5)
    caller.cancel()
    released.set()
    done, _ = await asyncio.wait([caller], timeout=5)
    assert caller in done and caller.cancelled()
    await asyncio.wait([child], timeout=5)
    assert child.cancelled()


async def test_the_tasks_own_cancellation_is_absorbed() -> None:
    child = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    await cancel_and_wait(child)
    assert child.cancelled()


async def test_a_failure_while_stopping_is_raised_unless_quiet() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("close failed") from None

    for quiet in (False, True):
        child = asyncio.create_task(fails_on_cancel())
        await asyncio.sleep(0)
        if quiet:
            await cancel_and_wait(child, quiet=True)
        else:
            with pytest.raises(RuntimeError, match="close failed"):
                await cancel_and_wait(child)


def test_no_module_suppresses_cancellation_around_an_await() -> None:
    """``suppress(CancelledError)`` around ``await task`` also eats the caller's cancel (a
    runner that never stopped on SIGTERM); stopping a task goes through cancel_and_wait."""
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "shardq"
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if "suppress(asyncio.CancelledError" in p.read_text()
    ]
    assert offenders == [], f"use shardq._internal.tasks.cancel_and_wait in {offenders}"
