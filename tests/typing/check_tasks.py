"""Typed tasks as an application uses them: must pass ``mypy --strict`` with every type exact.

Not a test module (pytest does not collect it): ``tests/unit/test_task_typing.py`` runs mypy
on it. ``assert_type`` fails the check wherever a type is not exactly the one written, an
``Any`` included.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypedDict, assert_type

import msgspec

from shardq import JobHandle, JobService, Task
from shardq.tasks import AsyncTask, SyncTask

jobs = JobService("sqlite:///typing.db")


@dataclass
class Receipt:
    order_id: int
    email: str


class Point(TypedDict):
    x: int
    y: int


class Reading(msgspec.Struct):
    sensor: str
    value: float


@jobs.task("receipt.send", priority="high", max_attempts=5, timeout=30)
async def send_receipt(r: Receipt) -> dict[str, int]:
    return {"sent": r.order_id}


@jobs.task("point.norm", duration="long")
def norm(p: Point) -> float:
    return math.hypot(p["x"], p["y"])


@jobs.task("reading")
async def record(r: Reading) -> None:
    return None


assert_type(send_receipt, AsyncTask[Receipt, dict[str, int]])
assert_type(norm, SyncTask[Point, float])
assert_type(record, AsyncTask[Reading, None])


async def use() -> None:
    h = await send_receipt.submit(Receipt(1, "a@b.c"), key="order:1", delay=0)
    assert_type(h, JobHandle[dict[str, int]])
    assert_type(h.id, str)
    assert_type(await h.result(timeout=10), dict[str, int])
    coroutine = assert_type(send_receipt(Receipt(3, "x@y.z")), Coroutine[Any, Any, dict[str, int]])
    coroutine.close()
    assert_type(await send_receipt(Receipt(3, "x@y.z")), dict[str, int])
    assert_type(norm({"x": 3, "y": 4}), float)
    n = await norm.submit({"x": 3, "y": 4}, priority="low", dedupe_key="p", max_attempts=2)
    assert_type(await n.result(), float)
    many = await record.submit_many([Reading("a", 1.0)], timeout=5, duration="short")
    assert_type(many, list[JobHandle[None]])
    assert_type(norm.submit_sync({"x": 1, "y": 1}), JobHandle[float])
    task: Task[Receipt, dict[str, int]] = send_receipt
    assert_type(await (await task.submit(Receipt(2, "c@d.e"))).result(), dict[str, int])


async def in_a_transaction(conn: sqlite3.Connection) -> None:
    job_id = await jobs.submit("receipt.send", {"order_id": 1}, conn=conn)
    assert_type(job_id, str)
    ids = await jobs.submit("receipt.send", [{"order_id": 1}], conn=conn)
    assert_type(ids, list[str])
    h = await send_receipt.submit(Receipt(1, "a@b.c"), conn=conn)
    assert_type(h, JobHandle[dict[str, int]])
    assert_type(jobs.submit_sync("receipt.send", {"order_id": 1}, conn=conn), str | list[str])
