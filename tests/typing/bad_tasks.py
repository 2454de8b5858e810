"""Wrong uses of typed tasks: ``mypy --strict`` must report an error on every line marked
``# error`` and on no other (``tests/unit/test_task_typing.py`` checks both)."""

from __future__ import annotations

from dataclasses import dataclass

from shardq import JobService

jobs = JobService("sqlite:///typing.db")


@dataclass
class Receipt:
    order_id: int
    email: str


@jobs.task("receipt.send")
async def send_receipt(r: Receipt) -> dict[str, int]:
    return {"sent": r.order_id}


@jobs.task("double")
def double(n: int) -> int:
    return n * 2


jobs.task("x", priority="urgent")  # error
jobs.task("x", max_attempts="5")  # error
jobs.task("x", colour="red")  # error


def ints(values: list[int]) -> None: ...


def text(value: str) -> None: ...


async def use() -> None:
    await send_receipt.submit(42)  # error
    await send_receipt.submit({"order_id": 1, "email": "a"})  # error
    await send_receipt.submit(Receipt(1, "a"), priority="urgent")  # error
    await send_receipt.submit(Receipt(1, "a"), colour="red")  # error
    await send_receipt.submit(Receipt(1, "a"), delay="soon")  # error
    await send_receipt.submit_many([1, 2])  # error
    send_receipt.submit_sync("r")  # error
    h = await send_receipt.submit(Receipt(1, "a"))
    ints(await h.result())  # error
    text(h.id + 1)  # error
    await double.submit("2")  # error
    text(double(2))  # error
    await send_receipt(1)  # error
    await double(2)  # error
