"""Typed tasks with pydantic models (the ``shardq[pydantic]`` extra), where installed."""

from __future__ import annotations

import datetime as dt

import pytest

from shardq import JobError
from shardq.tasks import task_schemas

from .conftest import ServiceFactory

pydantic = pytest.importorskip("pydantic")


class Order(pydantic.BaseModel):
    id: int
    at: dt.datetime


class Done(pydantic.BaseModel):
    ok: bool


async def test_pydantic_models_as_payload_and_result(make_service: ServiceFactory) -> None:
    jobs = make_service()
    got: list[object] = []

    @jobs.task("order")
    async def order(o: Order) -> Done:
        got.append(o)
        return Done(ok=True)

    at = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    async with jobs:
        h = await order.submit(Order(id=1, at=at))
        assert await h.result(timeout=10) == Done(ok=True)
        st = await jobs.status(h.id)
        assert st.job is not None and st.job.payload == {"id": 1, "at": "2026-01-02T00:00:00Z"}
        for bad in ({"id": "x"}, 3):
            with pytest.raises(JobError) as err:
                await order.submit(bad)
            assert err.value.reason == "Validation"
    assert got == [Order(id=1, at=at)]
    by_type, components = task_schemas(jobs)
    assert by_type["order"]["properties"]["id"] == {"title": "Id", "type": "integer"}
    assert components == {}
