"""The HTTP API through httpx's ASGI transport, on a real SQLite database and real handlers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from shardq import JobError, JobService, RetryPolicy
from shardq.http import create_app
from shardq.http.live import LiveFeed, quantile
from shardq.http.openapi import build_spec

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 4096


@pytest.fixture
async def jobs(sqlite_url: str) -> AsyncIterator[JobService]:
    svc = JobService(sqlite_url, concurrency=8, retry=RetryPolicy(base=0.01, cap=0.05))

    @svc.handler("echo")
    async def echo(p: Any) -> dict[str, Any]:
        return {"echo": p}

    @svc.handler("boom")
    async def boom(p: Any) -> None:
        raise JobError.from_validation(None, "boom refuses this payload")

    @svc.handler("slow")
    async def slow(p: Any) -> None:
        await asyncio.sleep(120)

    async with svc:
        yield svc


@pytest.fixture
async def feed(jobs: JobService) -> AsyncIterator[LiveFeed]:
    live = LiveFeed(jobs, interval=0.2)
    yield live
    await live.close()


@pytest.fixture
def app(jobs: JobService, feed: LiveFeed) -> ASGIApp:
    return create_app(jobs, TOKEN, max_body=MAX_BODY, feed=feed, allowed_hosts=["shardq.test"])


@pytest.fixture
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends the token with every request."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://shardq.test", headers=AUTH
    ) as c:
        yield c


@pytest.fixture
async def anon(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same app that sends no token unless told."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shardq.test") as c:
        yield c


async def _converged(feed: LiveFeed, jobs: JobService, timeout: float = 5) -> Any:
    """The database's stats once the feed's live counts agree with them (or the last read)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        st = await jobs.stats()
        if feed.counts()["by_status"] == st.by_status or (
            asyncio.get_running_loop().time() > deadline
        ):
            return st
        await asyncio.sleep(0.01)


async def until_status(jobs: JobService, job_id: str, status: str, timeout: float = 10) -> None:
    """Wait for a transition of ``job_id`` into ``status`` (listener first, then a read)."""
    seen = asyncio.Event()

    def on(jid: str, st: str) -> None:
        if jid == job_id and st == status:
            seen.set()

    jobs.add_listener(on)
    try:
        if (await jobs.status(job_id)).status == status:
            return
        async with asyncio.timeout(timeout):
            await seen.wait()
    finally:
        jobs.remove_listener(on)


async def snapshot(jobs: JobService) -> tuple[Any, ...]:
    st = await jobs.stats()
    rows = await jobs.list_jobs(limit=1000)
    dead = await jobs.dead_letters(limit=1000)
    return (
        st.by_status,
        st.dead_letters,
        sorted((r.id, r.status) for r in rows),
        sorted((d.id, d.replayed_at is not None) for d in dead),
    )


def assert_error(resp: httpx.Response, status: int, reason: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"reason", "message"}
    assert body["error"]["message"]
    if reason is not None:
        assert body["error"]["reason"] == reason


# -- submit and read -----------------------------------------------------------------------


async def test_submit_then_read_status_history_and_result(
    client: httpx.AsyncClient, jobs: JobService
) -> None:
    r = await client.post(
        "/api/jobs",
        json={"type": "echo", "payload": {"n": 1}, "priority": "high", "key": "acct-1"},
        headers=AUTH,
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert r.json() == {"id": job_id, "duplicate": False}
    await jobs.wait(job_id, timeout=10)

    r = await client.get(f"/api/jobs/{job_id}")
    assert r.status_code == 200
    job = r.json()
    assert job["status"] == "complete"
    assert job["result"] == {"echo": {"n": 1}}
    assert job["priority"] == "high" and job["key"] == "acct-1" and job["type"] == "echo"
    assert [h["status"] for h in job["history"]] == ["queued", "processing", "complete"]
    assert job["attempts"] == 1


async def test_batch_is_one_transaction_and_keeps_order(
    client: httpx.AsyncClient, jobs: JobService
) -> None:
    batch = {"jobs": [{"type": "echo", "payload": i} for i in range(5)]}
    r = await client.post("/api/jobs/batch", json=batch, headers=AUTH)
    assert r.status_code == 201, r.text
    ids = [j["id"] for j in r.json()["jobs"]]
    assert len(set(ids)) == 5
    for i, job_id in enumerate(ids):
        st = await jobs.wait(job_id, timeout=10)
        assert st.result == {"echo": i}

    before = await snapshot(jobs)
    bad = {
        "jobs": [{"type": "echo", "payload": 1}, {"type": "echo", "payload": 2, "priority": "x"}]
    }
    r = await client.post("/api/jobs/batch", json=bad, headers=AUTH)
    assert_error(r, 400, "Validation")
    assert "jobs[1]" in r.json()["error"]["message"]
    assert await snapshot(jobs) == before


async def test_dedupe_returns_the_retained_job(client: httpx.AsyncClient) -> None:
    body = {"type": "echo", "payload": {}, "dedupe_key": "welcome:42"}
    first = await client.post("/api/jobs", json=body, headers=AUTH)
    again = await client.post("/api/jobs", json=body, headers=AUTH)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "duplicate": True}


async def test_delay_and_timeout_options(client: httpx.AsyncClient, jobs: JobService) -> None:
    r = await client.post(
        "/api/jobs",
        json={"type": "echo", "payload": 1, "delay": 3600, "timeout": 5, "max_attempts": 2},
        headers=AUTH,
    )
    assert r.status_code == 201
    job = (await client.get(f"/api/jobs/{r.json()['id']}")).json()
    assert job["status"] == "queued" and job["timeout"] == 5 and job["max_attempts"] == 2
    assert job["run_at"] > job["created_at"]


# -- listing ---------------------------------------------------------------------------------


async def test_list_filters_and_pages(client: httpx.AsyncClient, jobs: JobService) -> None:
    t0 = time.time() - 1
    ids = await jobs.submit("echo", [{"i": i} for i in range(6)], key="k1")
    other = await jobs.submit("echo", {"x": 1}, priority="critical")
    for j in [*ids, other]:
        await jobs.wait(j, timeout=10)
    held = await jobs.submit("echo", {"later": True}, delay=3600, priority="low")

    r = await client.get("/api/jobs", params={"key": "k1", "limit": 4})
    page = r.json()
    assert r.status_code == 200 and len(page["jobs"]) == 4 and page["next"]
    r2 = await client.get("/api/jobs", params={"key": "k1", "limit": 4, "before": page["next"]})
    rest = r2.json()
    got = [j["id"] for j in page["jobs"] + rest["jobs"]]
    assert sorted(got) == sorted(ids) and rest["next"] is None

    r = await client.get("/api/jobs", params={"priority": "critical"})
    assert [j["id"] for j in r.json()["jobs"]] == [other]
    r = await client.get("/api/jobs", params={"status": "queued"})
    assert [j["id"] for j in r.json()["jobs"]] == [held]
    r = await client.get("/api/jobs", params={"type": "nope"})
    assert r.json() == {"jobs": [], "next": None}
    r = await client.get("/api/jobs", params={"since": str(t0), "until": "2999-01-01T00:00:00Z"})
    assert len(r.json()["jobs"]) == 8
    r = await client.get("/api/jobs", params={"until": str(t0)})
    assert r.json()["jobs"] == []


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_queued_and_running_jobs(client: httpx.AsyncClient, jobs: JobService) -> None:
    queued = await jobs.submit("echo", {}, delay=3600)
    r = await client.post(f"/api/jobs/{queued}/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = await client.post(f"/api/jobs/{queued}/cancel", headers=AUTH)
    assert_error(again, 409, "AlreadyCancelled")

    running = await jobs.submit("slow", {})
    await until_status(jobs, running, "processing")
    r = await client.post(f"/api/jobs/{running}/cancel", headers=AUTH)
    assert r.status_code in (200, 202)
    st = await jobs.wait(running, timeout=10)
    assert st.status == "cancelled"


# -- dead letters ------------------------------------------------------------------------------


async def test_dead_letters_list_show_and_replay(
    client: httpx.AsyncClient, jobs: JobService
) -> None:
    failed = [await jobs.submit("boom", {"i": i}) for i in range(3)]
    for j in failed:
        assert (await jobs.wait(j, timeout=10)).status == "failed"

    r = await client.get("/api/dead-letters")
    rows = r.json()["dead_letters"]
    assert r.status_code == 200 and sorted(d["job_id"] for d in rows) == sorted(failed)
    first = rows[0]
    assert first["reason"] == "Validation" and "boom refuses" in first["error"]
    r = await client.get(f"/api/dead-letters/{first['id']}")
    assert r.json() == first

    r = await client.post(f"/api/dead-letters/{first['id']}/replay", headers=AUTH)
    assert r.status_code == 201, r.text
    new_job = r.json()["job_id"]
    assert r.json() == {"dlq_id": first["id"], "job_id": new_job}
    assert (await jobs.wait(new_job, timeout=10)).status == "failed"  # boom fails again

    before = await snapshot(jobs)
    again = await client.post(f"/api/dead-letters/{first['id']}/replay", headers=AUTH)
    assert_error(again, 409, "AlreadyReplayed")
    assert await snapshot(jobs) == before

    r = await client.post(
        "/api/dead-letters/replay", json={"ids": [rows[1]["id"], first["id"]]}, headers=AUTH
    )
    out = r.json()
    assert r.status_code == 200
    assert [x["dlq_id"] for x in out["replayed"]] == [rows[1]["id"]]
    assert out["failed"][0]["dlq_id"] == first["id"]
    assert out["failed"][0]["error"]["reason"] == "AlreadyReplayed"

    r = await client.post("/api/dead-letters/replay", json={"all": True}, headers=AUTH)
    replayed = {x["dlq_id"] for x in r.json()["replayed"]}
    assert rows[2]["id"] in replayed and first["id"] not in replayed


# -- operations --------------------------------------------------------------------------------


async def test_stats_runners_metrics_health_and_spec(
    client: httpx.AsyncClient, jobs: JobService
) -> None:
    done = await jobs.submit("echo", [1, 2, 3])
    for j in done:
        await jobs.wait(j, timeout=10)
    await jobs.submit("echo", {}, delay=3600, priority="critical")

    r = await client.get("/api/stats", params={"series": "true"})
    s = r.json()
    assert r.status_code == 200
    assert s["source"] == "runner"
    assert s["by_status"]["complete"] == 3
    assert s["by_status"]["queued"] == 1 and s["queued_by_priority"]["critical"] == 1
    assert s["latency_ms"]["start_count"] >= 3 and s["latency_ms"]["start_p50_ms"] is not None
    assert isinstance(s["series"], list)

    r = await client.get("/api/runners")
    rn = r.json()
    assert rn["mode"] == "embedded" and len(rn["runners"]) == 1
    assert rn["runners"][0]["shards"] == list(range(rn["shards"]))
    assert rn["runners"][0]["handlers"] == ["boom", "echo", "slow"]
    assert rn["runners"][0]["this_process"] and rn["this_runner"] == rn["runners"][0]["id"]

    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "shardq_jobs_completed_total" in r.text

    r = await client.get("/healthz")
    assert r.json()["status"] == "ok"

    r = await client.get("/openapi.json")
    assert r.json() == build_spec()
    assert r.json()["openapi"].startswith("3.1")

    r = await client.get("/")
    assert r.status_code == 200 and "<title>shardq</title>" in r.text
    for asset in ("app.js", "chart.js", "style.css"):
        assert (await client.get(f"/static/{asset}")).status_code == 200
    assert_error(await client.get("/static/../app.py"), 404)


# -- security and bad input ----------------------------------------------------------------------


async def test_every_write_needs_the_token(anon: httpx.AsyncClient, jobs: JobService) -> None:
    job_id = await jobs.submit("echo", {}, delay=3600)
    bad = await jobs.submit("boom", {})
    await jobs.wait(bad, timeout=10)
    dlq_id = (await jobs.dead_letters())[0].id
    before = await snapshot(jobs)
    writes = [
        ("/api/jobs", {"type": "echo", "payload": {}}),
        ("/api/jobs/batch", {"jobs": [{"type": "echo", "payload": {}}]}),
        (f"/api/jobs/{job_id}/cancel", None),
        (f"/api/dead-letters/{dlq_id}/replay", None),
        ("/api/dead-letters/replay", {"all": True}),
    ]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for path, body in writes:
            r = await anon.post(path, json=body, headers=headers)
            assert_error(r, 401, "Unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert await snapshot(jobs) == before


async def test_without_a_token_the_api_is_read_only(jobs: JobService) -> None:
    app = create_app(jobs, None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        r = await c.post("/api/jobs", json={"type": "echo", "payload": {}}, headers=AUTH)
        assert_error(r, 401, "Unauthorized")
        assert "SHARDQ_API_TOKEN" in r.json()["error"]["message"]
        assert (await c.get("/api/jobs")).status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"payload": {}}, "'type'"),
        ({"type": "echo"}, "'payload'"),
        ({"type": 5, "payload": {}}, "'type'"),
        ({"type": "", "payload": {}}, "type"),
        ({"type": "echo", "payload": {}, "priority": "urgent"}, "priority"),
        ({"type": "echo", "payload": {}, "priority": ["high"]}, "priority"),
        ({"type": "echo", "payload": {}, "max_attempts": "3"}, "max_attempts"),
        ({"type": "echo", "payload": {}, "max_attempts": 0}, "max_attempts"),
        ({"type": "echo", "payload": {}, "max_attempts": True}, "max_attempts"),
        ({"type": "echo", "payload": {}, "timeout": -1}, "timeout"),
        ({"type": "echo", "payload": {}, "delay": "soon"}, "delay"),
        ({"type": "echo", "payload": {}, "key": 7}, "'key'"),
        ({"type": "echo", "payload": {}, "duration": "forever"}, "duration"),
        ({"type": "echo", "payload": {}, "colour": "red"}, "colour"),
        ([{"type": "echo", "payload": {}}], "JSON object"),
        ("echo", "JSON object"),
    ],
)
async def test_submit_refuses_wrong_types(
    client: httpx.AsyncClient, jobs: JobService, body: Any, fragment: str
) -> None:
    before = await snapshot(jobs)
    r = await client.post("/api/jobs", json=body, headers=AUTH)
    assert_error(r, 400, "Validation")
    assert fragment in r.json()["error"]["message"]
    assert await snapshot(jobs) == before


async def test_malformed_oversize_and_non_json_bodies(
    client: httpx.AsyncClient, jobs: JobService
) -> None:
    before = await snapshot(jobs)
    json_headers = {**AUTH, "Content-Type": "application/json"}
    for path in ("/api/jobs", "/api/jobs/batch", "/api/dead-letters/replay"):
        for raw in (b"{not json", b'{"type": "echo", "payload": NaN}', b"[1, 2", b'"\xff"'):
            assert_error(await client.post(path, content=raw, headers=json_headers), 400)
        assert_error(await client.post(path, content=b"", headers=json_headers), 400)
        big = json.dumps({"type": "echo", "payload": "x" * MAX_BODY}).encode()
        assert_error(await client.post(path, content=big, headers=json_headers), 413)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        r = await client.post(path, content=chunks(), headers=json_headers)
        assert_error(r, 413, "PayloadTooLarge")
        r = await client.post(
            path, content=b"type=echo", headers={**AUTH, "Content-Type": "text/plain"}
        )
        assert_error(r, 415, "UnsupportedMediaType")
    r = await client.post("/api/dead-letters/replay", json={"ids": "1", "all": False}, headers=AUTH)
    assert_error(r, 400, "Validation")
    r = await client.post(
        "/api/dead-letters/replay", json={"ids": ["1"], "all": True}, headers=AUTH
    )
    assert_error(r, 400, "Validation")
    assert await snapshot(jobs) == before


async def test_unknown_ids_and_routes(client: httpx.AsyncClient, jobs: JobService) -> None:
    before = await snapshot(jobs)
    for bad_id in ("123456789", "abc", "99999999999999999999", "-1", "9223372036854775808"):
        assert_error(await client.get(f"/api/jobs/{bad_id}"), 404, "NotFound")
        assert_error(await client.get(f"/api/dead-letters/{bad_id}"), 404, "NotFound")
        r = await client.post(f"/api/jobs/{bad_id}/cancel", headers=AUTH)
        assert_error(r, 404, "NotFound")
        r = await client.post(f"/api/dead-letters/{bad_id}/replay", headers=AUTH)
        assert_error(r, 404, "NotFound")
    r = await client.post("/api/dead-letters/replay", json={"ids": ["123"]}, headers=AUTH)
    assert r.json()["failed"][0]["error"]["reason"] == "NotFound"
    assert_error(await client.get("/api/nope"), 404, "NotFound")
    assert_error(await client.delete("/api/jobs"), 405, "MethodNotAllowed")
    r = await client.post("/api/jobs/1/cancel", json={"force": True}, headers=AUTH)
    assert_error(r, 400, "Validation")
    assert await snapshot(jobs) == before


@pytest.mark.parametrize(
    "query",
    [
        {"status": "done"},
        {"priority": "urgent"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"before": "x"},
        {"since": "yesterday"},
        {"until": "2024-01-01T00:00:00"},
        {"colour": "red"},
    ],
)
async def test_list_refuses_bad_query(client: httpx.AsyncClient, query: dict[str, str]) -> None:
    assert_error(await client.get("/api/jobs", params=query), 400, "Validation")


async def test_dead_letter_list_refuses_bad_query(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/dead-letters", params={"limit": "-3"}), 400)
    assert_error(await client.get("/api/stats", params={"series": "maybe"}), 400)


# -- live feed ---------------------------------------------------------------------------------


async def test_feed_pushes_transitions_and_counts(jobs: JobService, feed: LiveFeed) -> None:
    stream = feed.stream()
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def read() -> None:
        async for msg in stream:
            lines = dict(line.split(": ", 1) for line in msg.strip().splitlines() if ": " in line)
            if "event" in lines:
                await events.put((lines["event"], json.loads(lines["data"])))

    reader = asyncio.create_task(read())
    try:
        kind, hello = await asyncio.wait_for(events.get(), 10)
        assert kind == "hello" and hello["by_status"]["complete"] == 0
        job_id = await jobs.submit("echo", {"live": True})
        seen: list[str] = []
        ticks = 0
        async with asyncio.timeout(10):
            while "complete" not in seen or ticks < 2:
                kind, data = await events.get()
                if kind == "jobs":
                    seen += [t["status"] for t in data["transitions"] if t["id"] == job_id]
                elif kind == "tick":
                    ticks += 1
                    assert set(data["point"]) >= {"completed_per_s", "latency_p99_ms"}
        assert seen[-1] == "complete" and "processing" in seen
        assert feed.counts()["by_status"]["complete"] == 1
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def test_quantile_from_buckets() -> None:
    assert quantile([], 0.5) is None
    assert quantile([(1.0, 0.0), (float("inf"), 0.0)], 0.5) is None
    buckets = [(0.1, 50.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(buckets, 0.5) == pytest.approx(0.1)
    assert quantile(buckets, 0.75) == pytest.approx(0.55)
    assert quantile([(1.0, 0.0), (float("inf"), 10.0)], 0.99) == 1.0


async def test_mounted_inside_another_app(jobs: JobService) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("the user's app")

    shardq_app = create_app(jobs, TOKEN, allowed_hosts=["app.example"])
    outer = Starlette(routes=[Route("/", home), Mount("/ops/shardq", app=shardq_app)])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://app.example", headers=AUTH
    ) as c:
        assert (await c.get("/")).text == "the user's app"
        r = await c.post(
            "/ops/shardq/api/jobs", json={"type": "echo", "payload": {"m": 1}}, headers=AUTH
        )
        assert r.status_code == 201
        st = await jobs.wait(r.json()["id"], timeout=10)
        assert st.result == {"echo": {"m": 1}}
        r = await c.get(f"/ops/shardq/api/jobs/{st.id}")
        assert r.json()["status"] == "complete"
        stats = (await c.get("/ops/shardq/api/stats")).json()
        assert stats["by_status"]["complete"] >= 1
        page = await c.get("/ops/shardq/")
        assert page.status_code == 200 and 'src="static/app.js"' in page.text
        assert (await c.get("/ops/shardq/static/app.js")).status_code == 200
    await shardq_app.state.feed.close()


async def test_live_counts_agree_with_the_database(
    client: httpx.AsyncClient, jobs: JobService, feed: LiveFeed
) -> None:
    await feed.ensure_started()
    done = await jobs.submit("echo", [{"i": i} for i in range(5)], priority="low")
    failed = await jobs.submit("boom", [1, 2])
    await jobs.submit("echo", [1, 2], delay=3600, priority="critical")
    running = await jobs.submit("slow", {})
    for j in [*done, *failed]:
        await jobs.wait(j, timeout=10)
    await until_status(jobs, running, "processing")
    dl = (await jobs.dead_letters())[0]
    r = await client.post(f"/api/dead-letters/{dl.id}/replay", headers=AUTH)
    await jobs.wait(r.json()["job_id"], timeout=10)
    try:
        # A transition is committed before its listener runs: give the feed that loop turn.
        st = await _converged(feed, jobs)
        live = feed.counts()
        assert live["by_status"] == st.by_status
        assert live["queued_by_priority"] == st.queued_by_priority
        assert live["dead_letters"] == st.dead_letters
        assert st.by_status == {
            "queued": 2,
            "processing": 1,
            "complete": 5,
            "failed": 3,
            "cancelled": 0,
        }
        await client.post(f"/api/jobs/{running}/cancel", headers=AUTH)
        await jobs.wait(running, timeout=10)
        assert feed.counts()["by_status"] == (await jobs.stats()).by_status
    finally:
        if not (await jobs.status(running)).finished:
            await jobs.cancel(running)


async def test_live_queued_count_follows_a_cancel_of_a_queued_job(
    client: httpx.AsyncClient, jobs: JobService, feed: LiveFeed
) -> None:
    await feed.ensure_started()
    held = await jobs.submit("echo", [1, 2], delay=3600)
    await client.post(f"/api/jobs/{held[0]}/cancel", headers=AUTH)
    st = await jobs.stats()
    assert feed.counts()["by_status"] == st.by_status
