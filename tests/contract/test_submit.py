"""Submitting and running jobs: the happy path, batches, results, history, sync code."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import httpx
import pytest

from shardq import JobError, JobService, current_job
from shardq.models import JobPayload

from .conftest import ServiceFactory


async def test_submit_runs_the_handler_and_stores_result_and_history(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()

    @jobs.handler("add")
    async def add(p: dict[str, int]) -> int:
        return p["a"] + p["b"]

    async with jobs:
        job_id = await jobs.submit("add", {"a": 2, "b": 3})
        assert isinstance(job_id, str) and job_id.isdigit()
        st = await jobs.wait(job_id, timeout=10)
    assert st.status == "complete"
    assert st.result == 5
    assert st.attempts == 1
    assert [h.status for h in st.history] == ["queued", "processing", "complete"]
    stamps = [h.timestamp for h in st.history]
    assert stamps == sorted(stamps)
    assert st.job is not None and st.job.payload == {"a": 2, "b": 3}


async def test_batch_submit_returns_ids_in_order_and_runs_them_all(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()
    seen: list[int] = []

    @jobs.handler("n")
    async def n(p: int) -> int:
        seen.append(p)
        return p * 10

    async with jobs:
        ids = await jobs.submit("n", list(range(300)))
        assert len(ids) == len(set(ids)) == 300
        results = [await jobs.wait(i, timeout=20) for i in ids]
    assert [r.result for r in results] == [p * 10 for p in range(300)]
    assert sorted(seen) == list(range(300))
    batch_ids = {r.job.batch_id for r in results if r.job}
    assert len(batch_ids) == 1 and None not in batch_ids


async def test_every_option_of_a_batch_and_of_a_mixed_submit_is_stored(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service(runner=False)
    async with jobs:
        batch = await jobs.submit(
            "n",
            [{"i": 1}, {"i": 2}],
            priority="high",
            max_attempts=7,
            key="acct-9",
            timeout=2.5,
            delay=60,
            duration="long",
        )
        mixed = await jobs.submit_many(
            [
                JobPayload(type="a", payload=[1], priority="low", max_attempts=2, timeout=1.5),
                JobPayload(type="b", payload="x", key="k", duration="long"),
            ]
        )
        rows = [await jobs.status(i) for i in [*batch, *(r.job_id for r in mixed)]]
    got = [
        (r.status, r.job.type, r.job.payload, r.job.priority, r.job.max_attempts, r.job.key,
         r.job.timeout, r.job.duration, r.job.batch_id is not None)
        for r in rows if r.job
    ]  # fmt: skip
    assert got == [
        ("queued", "n", {"i": 1}, "high", 7, "acct-9", 2.5, "long", True),
        ("queued", "n", {"i": 2}, "high", 7, "acct-9", 2.5, "long", True),
        ("queued", "a", [1], "low", 2, None, 1.5, "short", False),
        ("queued", "b", "x", "normal", 3, "k", None, "long", False),
    ]
    assert rows[0].job and rows[0].job.batch_id == (rows[1].job and rows[1].job.batch_id)
    # The delay: due a minute after it was created, and its history begins "queued".
    assert rows[0].run_at is not None and rows[0].created_at is not None
    assert 59 <= (rows[0].run_at - rows[0].created_at).total_seconds() <= 61
    assert [h.status for h in rows[0].history] == ["queued"]


async def test_enqueue_is_an_alias_of_submit(make_service: ServiceFactory) -> None:
    jobs = make_service()
    jobs.register_handler("x", lambda p: p)
    async with jobs:
        st = await jobs.wait(await jobs.enqueue("x", {"v": 1}), timeout=10)
    assert st.result == {"v": 1}


async def test_sync_handlers_run_in_threads_with_their_job_context(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()
    main_thread = threading.get_ident()

    @jobs.handler("sync")
    def sync(p: Any) -> dict[str, Any]:
        ctx = current_job()
        return {"thread_differs": threading.get_ident() != main_thread, "id": ctx.job_id}

    async with jobs:
        job_id = await jobs.submit("sync", None)
        st = await jobs.wait(job_id, timeout=10)
    assert st.result == {"thread_differs": True, "id": job_id}


async def test_delay_defers_the_first_attempt(make_service: ServiceFactory) -> None:
    jobs = make_service()
    started = asyncio.Event()

    @jobs.handler("later")
    async def later(p: Any) -> None:
        started.set()

    async with jobs:
        job_id = await jobs.submit("later", {}, delay=0.4)
        st = await jobs.status(job_id)
        assert st.status == "queued"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(started.wait(), timeout=0.2)
        st = await jobs.wait(job_id, timeout=10)
    assert st.status == "complete"
    processing = next(h for h in st.history if h.status == "processing")
    assert processing.timestamp >= st.run_at  # type: ignore[operator]


async def test_status_is_readable_from_a_second_service(make_service: ServiceFactory) -> None:
    jobs = make_service()
    jobs.register_handler("x", lambda p: "done")
    reader = make_service(runner=False)
    async with jobs, reader:
        job_id = await reader.submit("x", {})
        st = await reader.wait(job_id, timeout=10)
    assert st.status == "complete" and st.result == "done"


async def test_context_vars_opted_in_are_restored_around_the_handler(database_url: str) -> None:
    from shardq import Config

    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant")
    jobs = JobService(config=Config(database_url=database_url), context_vars=[tenant])

    @jobs.handler("who")
    async def who(p: Any) -> str:
        return tenant.get("nobody")

    async with jobs:
        token = tenant.set("acme")
        job_id = await jobs.submit("who", {})
        tenant.reset(token)
        st = await jobs.wait(job_id, timeout=10)
    assert st.result == "acme"


async def test_handler_result_must_be_json(make_service: ServiceFactory) -> None:
    jobs = make_service()
    jobs.register_handler("bad", lambda p: {1, 2})
    async with jobs:
        job_id = await jobs.submit("bad", {})
        st = await jobs.wait(job_id, timeout=10)
        dead = await jobs.dead_letters()
    assert st.status == "failed" and st.attempts == 1
    assert "JSON" in (st.error or "")
    assert dead[0].job_id == job_id and dead[0].reason == "Validation"


async def test_wait_times_out_with_a_job_error(make_service: ServiceFactory) -> None:
    jobs = make_service()
    gate = asyncio.Event()

    @jobs.handler("block")
    async def block(p: Any) -> None:
        await gate.wait()

    async with jobs:
        job_id = await jobs.submit("block", {})
        with pytest.raises(JobError) as info:
            await jobs.wait(job_id, timeout=0.2)
        assert info.value.reason == "Timeout"
        gate.set()
        assert (await jobs.wait(job_id, timeout=10)).status == "complete"


async def test_two_services_in_one_process_do_not_interfere(tmp_path: Any) -> None:
    a = JobService(f"sqlite:///{tmp_path / 'a.db'}")
    b = JobService(f"sqlite:///{tmp_path / 'b.db'}")
    a.register_handler("t", lambda p: "a")
    b.register_handler("t", lambda p: "b")
    async with a, b:
        ja = await a.submit("t", {})
        jb = await b.submit("t", {})
        assert (await a.wait(ja, timeout=10)).result == "a"
        assert (await b.wait(jb, timeout=10)).result == "b"
    assert a.metrics.registry is not b.metrics.registry


def test_sync_wrappers_work_from_plain_code(database_url: str) -> None:
    from shardq import Config

    jobs = JobService(config=Config(database_url=database_url))
    jobs.register_handler("double", lambda p: p * 2)
    with jobs:
        job_id = jobs.submit_sync("double", 21)
        assert isinstance(job_id, str)
        done = threading.Event()
        jobs.add_listener(lambda jid, status: status == "complete" and done.set())
        st = jobs.status_sync(job_id)
        if st.status != "complete":
            assert done.wait(10)
        assert jobs.status_sync(job_id).result == 42
        with pytest.raises(JobError) as info:
            jobs.cancel_sync(job_id)
        assert info.value.reason == "AlreadyCancelled"


async def test_a_job_without_max_attempts_gets_the_configured_default(
    make_service: ServiceFactory,
) -> None:
    """From submit, from a batch of JobPayload and over HTTP alike."""
    from shardq.http import create_app

    jobs = make_service(runner=False, default_max_attempts=5)
    async with jobs:
        one = await jobs.submit("t", 1)
        two, three = await jobs.submit_many(
            [JobPayload("t", 2), JobPayload("t", 3, max_attempts=2)]
        )
        transport = httpx.ASGITransport(app=create_app(jobs, "t0ken"))
        auth = {"Authorization": "Bearer t0ken"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=auth
        ) as http:
            answer = await http.post("/api/jobs", json={"type": "t", "payload": 4})
            assert answer.status_code == 201, answer.text
            four = answer.json()["id"]
            answer = await http.post(
                "/api/jobs/batch", json={"jobs": [{"type": "t", "payload": 5}]}
            )
            assert answer.status_code == 201, answer.text
            [five] = [r["id"] for r in answer.json()["jobs"]]
        attempts = {}
        for job_id in (one, two.job_id, three.job_id, four, five):
            st = await jobs.status(job_id)
            assert st.job is not None
            attempts[job_id] = st.job.max_attempts
        assert list(attempts.values()) == [5, 5, 2, 5, 5]
