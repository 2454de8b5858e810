"""Typed tasks: payloads validated and encoded at submit, decoded for the handler, results
decoded for ``JobHandle.result``; on both engines."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from typing import Any, TypedDict

import msgspec
import pytest

from shardq import JobError, JobHandle, JobService, Task
from shardq.http.openapi import build_spec
from shardq.tasks import add_task_schemas, task_schemas

from .conftest import ServiceFactory


@dataclasses.dataclass
class Receipt:
    order_id: int
    email: str


@dataclasses.dataclass
class Sent:
    order_id: int
    at: dt.datetime


class Point(TypedDict):
    x: int
    y: int


class Reading(msgspec.Struct):
    sensor: str
    values: list[float]
    at: dt.datetime


async def _count(jobs: JobService) -> int:
    return sum((await jobs.stats()).by_status.values())


async def test_a_dataclass_task_runs_with_its_type_and_options(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()
    seen: list[object] = []

    @jobs.task("receipt.send", priority="high", max_attempts=5, timeout=30)
    async def send_receipt(r: Receipt) -> dict[str, int]:
        seen.append(r)
        return {"sent": r.order_id}

    assert isinstance(send_receipt, Task) and send_receipt.job_type == "receipt.send"
    async with jobs:
        h = await send_receipt.submit(Receipt(1, "a@b.c"), key="order:1", delay=0)
        assert isinstance(h, JobHandle) and h.id.isdigit()
        assert await h.result(timeout=10) == {"sent": 1}
        st = await jobs.status(h.id)
    assert seen == [Receipt(1, "a@b.c")]
    assert st.job is not None
    assert (st.job.priority, st.job.max_attempts, st.job.timeout, st.job.key) == (
        "high",
        5,
        30,
        "order:1",
    )
    assert st.job.payload == {"order_id": 1, "email": "a@b.c"}


async def test_calling_the_task_just_runs_the_function(make_service: ServiceFactory) -> None:
    jobs = make_service()

    @jobs.task("double")
    async def double(n: int) -> int:
        return n * 2

    @jobs.task("triple")
    def triple(n: int) -> int:
        return n * 3

    async with jobs:
        assert await double(4) == 8
        assert triple(4) == 12
        assert double.__name__ == "double"
        assert await _count(jobs) == 0


async def test_a_payload_that_does_not_fit_is_refused_before_anything_is_stored(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()

    @jobs.task("receipt.send")
    async def send_receipt(r: Receipt) -> None: ...

    @jobs.task("point")
    async def point(p: Point) -> None: ...

    async with jobs:
        bad: list[tuple[Task[Any, Any], object]] = [
            (send_receipt, Receipt("one", "a@b.c")),  # type: ignore[arg-type]
            (send_receipt, 42),
            (send_receipt, object()),
            (point, {"x": 1}),
            (point, {"x": 1, "y": "2"}),
        ]
        for task, payload in bad:
            with pytest.raises(JobError) as err:
                await task.submit(payload)
            assert err.value.reason == "Validation"
        with pytest.raises(JobError) as err:
            await send_receipt.submit_many([Receipt(1, "a"), Receipt("2", "b")])  # type: ignore[arg-type]
        assert err.value.reason == "Validation"
        assert "int" in str(err.value)
        assert await _count(jobs) == 0


async def test_typeddict_struct_and_rich_results_round_trip(make_service: ServiceFactory) -> None:
    jobs = make_service()
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    got: list[object] = []

    @jobs.task("point.norm")
    async def norm(p: Point) -> dict[int, int]:
        got.append(p)
        return {p["x"]: p["y"]}

    @jobs.task("reading")
    async def reading(r: Reading) -> Sent:
        got.append(r)
        return Sent(7, r.at)

    async with jobs:
        h1 = await norm.submit({"x": 3, "y": 4})
        h2 = await reading.submit(Reading("s1", [1.5, 2.0], at))
        assert await h1.result(timeout=10) == {3: 4}
        assert await h2.result(timeout=10) == Sent(7, at)
    assert got == [{"x": 3, "y": 4}, Reading("s1", [1.5, 2.0], at)]


async def test_a_sync_task_and_submit_sync(make_service: ServiceFactory) -> None:
    jobs = make_service()
    threads: list[str] = []

    @jobs.task("upper")
    def upper(s: str) -> str:
        threads.append(threading.current_thread().name)
        return s.upper()

    def run() -> str:
        with jobs:
            return upper.submit_sync("abc", priority="low").id

    job_id = await asyncio.to_thread(run)
    async with jobs:
        st = await jobs.wait(job_id, timeout=10)
        assert st.result == "ABC" and st.job is not None and st.job.priority == "low"
        h = await upper.submit("xyz")
        assert await h.result(timeout=10) == "XYZ"
    assert threads and all(t.startswith("shardq-handler") for t in threads)


async def test_result_raises_when_the_job_failed_or_was_cancelled(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()

    @jobs.task("boom", max_attempts=1)
    async def boom(n: int) -> int:
        raise ValueError(f"no {n}")

    @jobs.task("later")
    async def later(n: int) -> int:
        return n

    async with jobs:
        with pytest.raises(JobError) as err:
            await (await boom.submit(1)).result(timeout=10)
        assert err.value.reason == "MaxRetries" and "no 1" in str(err.value)
        h = await later.submit(1, delay=3600)
        await jobs.cancel(h.id)
        with pytest.raises(JobError) as err:
            await h.result(timeout=10)
        assert err.value.reason == "AlreadyCancelled"
        h = await later.submit(2, delay=3600)
        with pytest.raises(JobError) as err:
            await h.result(timeout=0.05)
        assert err.value.reason == "Timeout"


async def test_a_stored_payload_that_does_not_decode_is_dead_lettered_at_once(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()
    calls: list[object] = []

    @jobs.task("receipt.send", max_attempts=5)
    async def send_receipt(r: Receipt) -> None:
        calls.append(r)

    async with jobs:
        job_id = await jobs.submit("receipt.send", {"order_id": "x"})
        st = await jobs.wait(job_id, timeout=10)
        (dl,) = await jobs.dead_letters()
    assert st.status == "failed" and st.attempts == 1 and not calls
    assert dl.reason == "Validation" and "Receipt" in (dl.error or "")


async def test_a_batch_of_a_task_is_one_all_or_none_submit(make_service: ServiceFactory) -> None:
    jobs = make_service()

    @jobs.task("sq")
    async def sq(n: int) -> int:
        return n * n

    async with jobs:
        handles = await sq.submit_many([1, 2, 3], dedupe_key="sq")
        again = await sq.submit_many([1, 2, 3], dedupe_key="sq")
        assert [h.id for h in again] == [h.id for h in handles]
        assert [await h.result(timeout=10) for h in handles] == [1, 4, 9]
        assert await sq.submit_many([]) == []


def test_task_declarations_are_checked(tmp_path: Any) -> None:
    jobs = JobService(f"sqlite:///{tmp_path / 'x.db'}")

    def untyped(p):  # type: ignore[no-untyped-def]
        return p

    def two(a: int, b: int) -> int:
        return a + b

    with pytest.raises(JobError, match="annotate the payload"):
        jobs.task("a")(untyped)
    with pytest.raises(JobError, match="exactly one"):
        jobs.task("b")(two)
    for bad in ({"priority": "urgent"}, {"max_attempts": 0}, {"timeout": -1}, {"colour": 1}):
        with pytest.raises(JobError) as err:
            jobs.task("c", **bad)  # type: ignore[arg-type]
        assert err.value.reason == "Validation"
    with pytest.raises(JobError) as err:
        jobs.task("")
    assert err.value.reason == "Validation"

    @jobs.task("ok")
    def ok(p: Point, scale: int = 1) -> int:
        return p["x"] * scale

    assert ok({"x": 2, "y": 0}) == 2


def test_each_task_has_its_payload_schema(tmp_path: Any) -> None:
    jobs = JobService(f"sqlite:///{tmp_path / 'x.db'}")

    @jobs.task("receipt.send")
    async def send_receipt(r: Receipt) -> None: ...

    @jobs.task("n")
    async def n(x: int) -> None: ...

    @jobs.handler("plain")
    async def plain(p: Any) -> None: ...

    by_type, components = task_schemas(jobs)
    assert set(by_type) == {"receipt.send", "n"}
    assert by_type["n"] == {"type": "integer"}
    assert by_type["receipt.send"] == {"$ref": "#/components/schemas/task.Receipt"}
    assert components["task.Receipt"]["required"] == ["order_id", "email"]
    spec = add_task_schemas(build_spec(), jobs)
    assert spec["x-shardq-tasks"]["n"] == {"payload": {"type": "integer"}}
    assert spec["components"]["schemas"]["task.Receipt"] == components["task.Receipt"]
    assert "Job" in spec["components"]["schemas"]
