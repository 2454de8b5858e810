"""Cancel: a queued job never runs, a running one is interrupted, a finished one refuses."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from shardq import JobError, current_job

from .conftest import ServiceFactory


async def test_a_cancelled_queued_job_never_runs(make_service: ServiceFactory) -> None:
    jobs = make_service()
    ran: list[Any] = []
    jobs.register_handler("t", ran.append)
    async with jobs:
        job_id = await jobs.submit("t", {"n": 1}, delay=1.0)
        await jobs.cancel(job_id)
        st = await jobs.status(job_id)
        assert st.status == "cancelled"
        # A later job due after the cancelled one's time runs; the cancelled one did not.
        later = await jobs.submit("t", {"n": 2}, delay=1.1)
        await jobs.wait(later, timeout=10)
    assert ran == [{"n": 2}]
    assert [h.status for h in st.history] == ["queued", "cancelled"]


async def test_a_running_async_job_is_interrupted(make_service: ServiceFactory) -> None:
    jobs = make_service()
    started = asyncio.Event()
    interrupted = asyncio.Event()

    @jobs.handler("long")
    async def long(p: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    async with jobs:
        job_id = await jobs.submit("long", {}, duration="long")
        await asyncio.wait_for(started.wait(), timeout=10)
        await jobs.cancel(job_id)
        st = await jobs.wait(job_id, timeout=10)
    assert interrupted.is_set()
    assert st.status == "cancelled" and st.attempts == 1
    assert [h.status for h in st.history] == ["queued", "processing", "cancelled"]


async def test_a_running_thread_job_is_told_and_its_result_discarded(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()
    started = threading.Event()
    told = threading.Event()

    @jobs.handler("cpu")
    def cpu(p: Any) -> str:
        started.set()
        if current_job().cancelled.wait(10):
            told.set()
        return "discarded"

    async with jobs:
        job_id = await jobs.submit("cpu", {})
        assert await asyncio.to_thread(started.wait, 10)
        await jobs.cancel(job_id)
        st = await jobs.wait(job_id, timeout=10)
        assert await asyncio.to_thread(told.wait, 10)
    assert st.status == "cancelled" and st.result is None


async def test_cancel_from_another_process_interrupts_the_runner(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()
    started = asyncio.Event()

    @jobs.handler("long")
    async def long(p: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    other = make_service(runner=False)
    async with jobs, other:
        job_id = await other.submit("long", {})
        await asyncio.wait_for(started.wait(), timeout=10)
        await other.cancel(job_id)
        st = await jobs.wait(job_id, timeout=10)
    assert st.status == "cancelled"


async def test_cancelling_a_finished_job_is_a_clear_error(make_service: ServiceFactory) -> None:
    jobs = make_service()
    jobs.register_handler("t", lambda p: 1)
    async with jobs:
        job_id = await jobs.submit("t", {})
        await jobs.wait(job_id, timeout=10)
        with pytest.raises(JobError) as info:
            await jobs.cancel(job_id)
        assert info.value.reason == "AlreadyCancelled"
        assert "complete" in str(info.value)
        assert (await jobs.status(job_id)).status == "complete"
