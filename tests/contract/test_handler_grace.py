"""A job whose type this runner has no handler for waits while another runner has one (a
rolling deploy), and is dead-lettered only once none has had one within the grace period."""

from __future__ import annotations

import asyncio

from shardq import FakeClock

from .conftest import ServiceFactory


async def test_a_job_waits_while_some_runner_has_its_handler_then_fails(
    make_service: ServiceFactory,
) -> None:
    clock = FakeClock()
    jobs = make_service(clock=clock, handler_grace=600)
    jobs.register_handler("old.type", lambda p: p)
    waited = asyncio.Event()
    ended: list[str] = []

    def seen(job_id: str, status: str) -> None:
        if status == "queued":
            waited.set()
        elif status == "failed":
            ended.append(job_id)
            waited.set()

    jobs.add_listener(seen)
    async with jobs:
        # A runner of the next version, elsewhere, handles a type this one does not know.
        await jobs.driver.advertise_handlers(["new.type"], "next-version", clock.now_ms())
        job_id = await jobs.submit("new.type", {"n": 1})
        await asyncio.wait_for(waited.wait(), timeout=10)
        st = await jobs.status(job_id)
        assert (st.status, st.attempts) == ("queued", 0)
        last = st.history[-1]
        assert last.status == "snoozed" and last.error is not None
        assert "no handler for 'new.type'" in last.error
        assert await jobs.dead_letters() == []
        # No runner has had the handler for longer than the grace period: it fails. (An
        # attempt whose check began before the clock moved may wait 5 s more: storage I/O
        # runs in real time, so each wait is awaited before the clock moves again.)
        waited.clear()
        await clock.advance(601)
        for _ in range(5):
            await asyncio.wait_for(waited.wait(), timeout=10)
            if ended:
                break
            waited.clear()
            await clock.advance(5)
        st = await jobs.wait(job_id, timeout=10)
    assert st.status == "failed" and st.error is not None and "HandlerMissing" in st.error


async def test_a_type_no_runner_ever_handled_fails_at_once(make_service: ServiceFactory) -> None:
    jobs = make_service()
    jobs.register_handler("known", lambda p: p)
    async with jobs:
        st = await jobs.wait(await jobs.submit("unknown", {}), timeout=10)
    assert st.status == "failed" and st.attempts == 1


async def test_a_runner_advertises_its_own_types(make_service: ServiceFactory) -> None:
    clock = FakeClock()
    jobs = make_service(clock=clock)
    jobs.register_handler("mine", lambda p: p)
    async with jobs:
        assert await jobs.driver.handled_since("mine", clock.now_ms())
        assert not await jobs.driver.handled_since("other", 0)
