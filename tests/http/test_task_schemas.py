"""/openapi.json describes the payload of each typed task of the served service."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from shardq import JobService
from shardq.http import create_app
from shardq.http.openapi import build_spec


@dataclass
class Receipt:
    order_id: int
    email: str


async def test_openapi_carries_each_typed_task_payload_schema(sqlite_url: str) -> None:
    jobs = JobService(sqlite_url, runner=False)

    @jobs.task("receipt.send")
    async def send_receipt(r: Receipt) -> None: ...

    async with jobs:
        transport = httpx.ASGITransport(app=create_app(jobs, "t0ken"))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            spec = (await c.get("/openapi.json")).json()
    assert spec["x-shardq-tasks"] == {
        "receipt.send": {"payload": {"$ref": "#/components/schemas/task.Receipt"}}
    }
    receipt = spec["components"]["schemas"]["task.Receipt"]
    assert receipt["properties"]["order_id"] == {"type": "integer"}
    assert set(build_spec()["components"]["schemas"]) < set(spec["components"]["schemas"])


async def test_a_typed_tasks_payload_is_checked_when_submitted_over_http(
    sqlite_url: str,
) -> None:
    jobs = JobService(sqlite_url, runner=False)

    @jobs.task("receipt.send")
    async def send_receipt(r: Receipt) -> None: ...

    async with jobs:
        transport = httpx.ASGITransport(app=create_app(jobs, "t0ken"))
        auth = {"Authorization": "Bearer t0ken"}
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            bad = await c.post(
                "/api/jobs",
                json={"type": "receipt.send", "payload": {"order_id": "one"}},
                headers=auth,
            )
            batch = await c.post(
                "/api/jobs/batch",
                json={"jobs": [
                    {"type": "receipt.send", "payload": {"order_id": 1, "email": "a@b.c"}},
                    {"type": "receipt.send", "payload": {"email": "a@b.c"}},
                ]},
                headers=auth,
            )  # fmt: skip
            good = await c.post(
                "/api/jobs",
                json={"type": "receipt.send", "payload": {"order_id": 1, "email": "a@b.c"}},
                headers=auth,
            )
        stats = await jobs.stats()
    assert bad.status_code == 400 and "Receipt" in bad.json()["error"]["message"], bad.json()
    assert batch.status_code == 400
    assert good.status_code == 201
    # Only the good one was stored: nothing of the refused batch either.
    assert stats.by_status["queued"] == 1
