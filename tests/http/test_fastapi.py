"""shardq.contrib.fastapi on a tiny FastAPI application: the lifespan starts and stops the
service, endpoints get it by dependency, and the API is served under a path behind the
application's own check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shardq import JobService

fastapi = pytest.importorskip("fastapi")

from shardq.contrib.fastapi import dependency, lifespan, mount  # noqa: E402

TOKEN = "api-t0ken"


@dataclass
class Order:
    id: int


def _require_staff(request: Any) -> None:
    if request.headers.get("x-staff") != "yes":
        raise fastapi.HTTPException(403, "staff only")


def _app(jobs: JobService, events: list[str]) -> Any:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def own(app: Any) -> Any:
        events.append("app up")
        yield {"greeting": "hi"}
        events.append("app down")

    app = fastapi.FastAPI(lifespan=lifespan(jobs, then=own))
    mount(app, jobs, "/jobs/", token=TOKEN, auth=_require_staff, allowed_hosts=["shop.test"])

    @jobs.task("order.confirm")
    async def confirm(o: Order) -> dict[str, int]:
        return {"confirmed": o.id}

    # A default, not an Annotated hint: annotations are strings here, and ``jobs`` is local.
    provide = fastapi.Depends(dependency(jobs))

    @app.post("/orders/{n}")
    async def create(n: int, svc: JobService = provide) -> dict[str, Any]:
        h = await confirm.submit(Order(n))
        status = await svc.wait(h.id, timeout=10)
        return {"job": h.id, "result": await h.result(timeout=10), "status": status.status}

    return app


async def test_lifespan_dependency_and_mounted_api(sqlite_url: str) -> None:
    jobs = JobService(sqlite_url)
    events: list[str] = []
    app = _app(jobs, events)
    assert jobs.health_problem() is not None
    async with app.router.lifespan_context(app) as state:
        assert jobs.health_problem() is None and events == ["app up"]
        assert state == {"greeting": "hi"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
            r = await c.post("/orders/7")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["result"] == {"confirmed": 7} and body["status"] == "complete"
            staff = {"x-staff": "yes", "Authorization": f"Bearer {TOKEN}"}
            r = await c.get(f"/jobs/api/jobs/{body['job']}", headers=staff)
            assert r.status_code == 200 and r.json()["status"] == "complete"
            r = await c.get(f"/jobs/api/jobs/{body['job']}", headers={"x-staff": "no"})
            assert r.status_code == 403
            assert r.json()["error"] == {"reason": "Forbidden", "message": "staff only"}
            r = await c.get(f"/jobs/api/jobs/{body['job']}", headers={"x-staff": "yes"})
            assert r.status_code == 401  # the application's check passed; the token is missing
            r = await c.get("/jobs/openapi.json", headers={"x-staff": "yes"})
            assert "order.confirm" in r.json()["x-shardq-tasks"]
            r = await c.get("/jobs/", headers={"x-staff": "yes"})
            assert r.status_code == 200 and "<title>shardq</title>" in r.text
    assert events == ["app up", "app down"]
    assert jobs.health_problem() is not None


def test_mount_refuses_a_path_that_names_no_prefix(sqlite_url: str) -> None:
    jobs = JobService(sqlite_url)
    app = fastapi.FastAPI()
    for bad in ("", "/", "jobs"):
        with pytest.raises(ValueError, match="path"):
            mount(app, jobs, bad, token=TOKEN)
