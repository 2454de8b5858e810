"""The flow-control endpoints over HTTP, on real SQLite and PostgreSQL: what they store and
list, that the runner applies it (and a held job says why it waits), what they refuse
(changing nothing), who may call them, and that /openapi.json says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema_rs
import msgspec
import pytest

from shardq import JobService, Throttled
from shardq.http import create_app
from shardq.http.openapi import build_spec
from shardq.schema import Error, Job, Limit

from .test_api import AUTH, TOKEN

SPEC = build_spec()


class Gate:
    """Jobs of ``gated`` wait here, on the server's loop, until opened."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.started = asyncio.Event()


@pytest.fixture
async def gate() -> Gate:
    return Gate()


@pytest.fixture
async def jobs(database_url: str, gate: Gate) -> AsyncIterator[JobService]:
    svc = JobService(database_url)

    @svc.handler("echo")
    async def echo(p: Any) -> Any:
        return p

    @svc.handler("team/a")
    @svc.handler("two\nlines")
    async def team(p: Any) -> Any:
        return p

    @svc.handler("gated")
    async def gated(p: Any) -> Any:
        gate.started.set()
        await gate.open.wait()
        return p

    @svc.handler("pushback")
    async def pushback(p: Any) -> None:
        raise Throttled(retry_after=600)

    async with svc:
        yield svc
        gate.open.set()


@pytest.fixture
async def client(jobs: JobService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(jobs, TOKEN))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", headers=AUTH
    ) as c:
        yield c


LimitList = dict[str, list[Limit]]


def _as(kind: Any, r: httpx.Response) -> Any:
    # strict: the body must be exactly of the declared type (no unknown fields)
    assert r.status_code == 200, r.text
    return msgspec.json.decode(r.content, type=kind, strict=True)


async def _listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/api/limits")
    _as(LimitList, r)
    limits: list[dict[str, Any]] = r.json()["limits"]
    return limits


async def test_put_changes_only_what_the_body_gives(
    client: httpx.AsyncClient, jobs: JobService
) -> None:
    assert await _listed(client) == []
    r = await client.put(
        "/api/limits/echo", json={"concurrency": 5, "rate": {"count": 100, "per": 60, "burst": 20}}
    )
    lim = _as(Limit, r)
    assert (lim.job_type, lim.concurrency, lim.key_concurrency, lim.key_rate) == (
        "echo",
        5,
        None,
        None,
    )
    assert r.json()["rate"] == {"count": 100, "per": 60.0, "burst": 20}
    assert lim.tokens == 21.0 and lim.running == 0 and not lim.paused

    # Absent fields stay; 3.0 is the integer 3 (as JSON Schema counts it); null removes.
    r = await client.put(
        "/api/limits/echo", json={"key_concurrency": 3.0, "key_rate": {"count": 5}}
    )
    both = r.json()
    assert (both["concurrency"], both["key_concurrency"]) == (5, 3)
    assert both["rate"]["count"] == 100 and both["key_rate"] == {"count": 5, "per": 1.0, "burst": 0}
    r = await client.put("/api/limits/echo", json={"concurrency": None, "rate": None})
    now = r.json()
    assert (now["concurrency"], now["rate"], now["tokens"]) == (None, None, None)
    assert now["key_concurrency"] == 3
    assert await _listed(client) == [now] == [lim.to_dict() for lim in await jobs.limits()]

    # A job type holding a slash or a line break is sent with it encoded.
    r = await client.put("/api/limits/team%2Fa", json={"concurrency": 2})
    assert r.json()["job_type"] == "team/a"
    r = await client.put("/api/limits/two%0Alines", json={"concurrency": 2})
    assert r.json()["job_type"] == "two\nlines"
    assert [x["job_type"] for x in await _listed(client)] == ["echo", "team/a", "two\nlines"]


async def test_the_runner_applies_it_and_a_held_job_says_why(
    client: httpx.AsyncClient, jobs: JobService, gate: Gate
) -> None:
    r = await client.put("/api/limits/gated", json={"concurrency": 1})
    assert r.status_code == 200
    first = await jobs.submit("gated", {"n": 1})
    second = await jobs.submit("gated", {"n": 2})
    async with asyncio.timeout(15):
        await gate.started.wait()
    [lim] = await _listed(client)
    assert (lim["running"], lim["concurrency"]) == (1, 1)
    held = _as(Job, await client.get(f"/api/jobs/{second}"))
    assert (held.status, held.waiting) == ("queued", "waiting for a slot of gated")
    assert _as(Job, await client.get(f"/api/jobs/{first}")).waiting is None

    # Raising the limit lets the held job start while the first still runs.
    started: asyncio.Queue[str] = asyncio.Queue()
    jobs.add_listener(lambda job_id, status: status == "processing" and started.put_nowait(job_id))
    r = await client.put("/api/limits/gated", json={"concurrency": 2})
    assert r.json()["concurrency"] == 2
    async with asyncio.timeout(15):
        while await started.get() != second:
            pass
    assert (await jobs.status(first)).status == "processing"
    gate.open.set()
    for job_id in (first, second):
        assert (await jobs.wait(job_id, timeout=15)).status == "complete"


async def test_pause_and_throttle_are_listed(client: httpx.AsyncClient, jobs: JobService) -> None:
    await jobs.pause(job_type="echo")
    await jobs.submit("pushback", {})
    async with asyncio.timeout(15):
        while True:  # polls until the handler's Throttled is stored
            by_type = {x["job_type"]: x for x in await _listed(client)}
            if by_type.get("pushback", {}).get("throttled_until"):
                break
            await asyncio.sleep(0.02)
    assert by_type["echo"]["paused"] is True and by_type["echo"]["throttled_until"] is None
    assert by_type["pushback"]["throttled_until"] > jobs.clock.now_ms()


BAD_BODIES: list[tuple[str, dict[str, Any] | bytes, str]] = [
    ("echo", {}, "give at least one of concurrency, key_concurrency, rate and key_rate"),
    ("echo", {"concurrency": 0}, "concurrency must be 1..1000000, got 0"),
    ("echo", {"concurrency": 1000001}, "concurrency must be 1..1000000"),
    ("echo", {"concurrency": 10**30}, "concurrency must be 1..1000000"),
    ("echo", {"key_concurrency": 2.5}, "key_concurrency must be a positive integer"),
    ("echo", {"concurrency": True}, "'concurrency' must be"),
    ("echo", {"concurrency": "5"}, "'concurrency' must be"),
    ("echo", {"rate": {"count": 0}}, "Rate count must be 1..1000000, got 0"),
    ("echo", {"rate": {"count": 1.5}}, "Rate count must be an integer"),
    ("echo", {"rate": {"count": 5, "per": 0}}, "Rate per must be 0.001..86400 seconds"),
    ("echo", {"rate": {"count": 5, "per": 86401}}, "Rate per must be 0.001..86400 seconds"),
    ("echo", {"key_rate": {"count": 5, "burst": -1}}, "Rate burst must be 0..1000000"),
    ("echo", {"rate": {"per": 5}}, "'rate' needs the field 'count'"),
    ("echo", {"rate": 5}, "'rate' must be"),
    ("echo", {"rate": {"count": 5, "every": 2}}, "unknown field 'every' in 'rate'"),
    ("echo", {"colour": "red"}, "unknown field 'colour'"),
    ("echo", b'{"concurrency": 1, "concurrency": 2}', "duplicate key 'concurrency'"),
    ("echo", b'{"rate": {"count": 1, "per": NaN}}', "NaN is not JSON"),
    ("echo", b"", "a JSON request body is required"),
    ("nobody.handles", {"concurrency": 1}, "unknown job type 'nobody.handles'"),
    ("%20", {"concurrency": 1}, "job type must be a non-empty string"),
    ("", {"concurrency": 1}, "job type must be a non-empty string"),
    ("t" * 256, {"concurrency": 1}, "longer than 255"),
]


async def test_bad_input_is_refused_and_changes_nothing(client: httpx.AsyncClient) -> None:
    await client.put("/api/limits/echo", json={"concurrency": 4, "key_rate": {"count": 2}})
    before = await _listed(client)
    for job_type, body, needle in BAD_BODIES:
        raw = body if isinstance(body, bytes) else httpx.Request("PUT", "/", json=body).content
        r = await client.put(
            f"/api/limits/{job_type}", content=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, (job_type, body, r.text)
        error = msgspec.json.decode(r.content, type=Error, strict=True).error
        assert error.reason == "Validation" and needle in error.message, (body, error.message)
    r = await client.get("/api/limits", params={"type": "echo"})
    assert r.status_code == 400 and "unknown query parameter 'type'" in r.text
    assert await _listed(client) == before


async def test_reads_need_the_token_and_writes_a_write_token(jobs: JobService) -> None:
    await jobs.limit("echo", concurrency=3)
    for token in (TOKEN, None):
        transport = httpx.ASGITransport(app=create_app(jobs, token))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            r = await c.get("/api/limits")
            assert r.status_code == (401 if token else 200), (token, r.text)
            r = await c.put("/api/limits/echo", json={"concurrency": 9})
            assert r.status_code == 401 and r.json()["error"]["reason"] == "Unauthorized"
    assert [lim.concurrency for lim in await jobs.limits()] == [3]


def test_both_endpoints_are_in_the_document() -> None:
    paths = SPEC["paths"]
    assert set(paths["/api/limits"]) == {"get"}
    listing = paths["/api/limits"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listing["schema"]["properties"]["limits"]["items"] == {
        "$ref": "#/components/schemas/Limit"
    }
    put = paths["/api/limits/{job_type}"]["put"]
    assert set(paths["/api/limits/{job_type}"]) == {"put"}
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert body["allOf"][0] == {"$ref": "#/components/schemas/LimitRequest"}
    assert put["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Limit"
    }
    assert {"400", "401", "413", "415"} <= set(put["responses"])
    assert [p["name"] for p in put["parameters"]] == ["job_type"]


def _body_validator() -> Any:
    put = SPEC["paths"]["/api/limits/{job_type}"]["put"]
    schema = put["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for({**schema, "components": SPEC["components"]})


SPEC_CASES: list[dict[str, Any]] = [
    {},
    {"concurrency": 1},
    {"concurrency": 1_000_000},
    {"concurrency": 1_000_001},
    {"concurrency": 0},
    {"concurrency": 5.0},
    {"concurrency": 5.5},
    {"concurrency": None},
    {"concurrency": True},
    {"key_concurrency": -1},
    {"rate": None, "key_rate": None},
    {"rate": {"count": 1}},
    {"rate": {"count": 1_000_000, "per": 86_400, "burst": 1_000_000}},
    {"rate": {"count": 1_000_001}},
    {"rate": {"count": 2.0, "burst": 1.0}},
    {"rate": {"count": 2, "burst": 1.5}},
    {"rate": {"count": 2, "per": 0.001}},
    {"rate": {"count": 2, "per": 0.0009}},
    {"rate": {"count": 2, "per": 86_400.5}},
    {"rate": {"count": 2, "burst": -1}},
    {"key_rate": {"count": 2, "per": "1"}},
    {"key_rate": {}},
    {"other": 1},
]


async def test_the_document_and_the_server_agree_on_bodies(client: httpx.AsyncClient) -> None:
    validator = _body_validator()
    disagree = []
    for body in SPEC_CASES:
        r = await client.put("/api/limits/echo", json=body)
        assert r.status_code in (200, 400), r.text
        if validator.is_valid(body) != (r.status_code == 200):
            disagree.append((body, r.status_code, r.text[:160]))
    assert not disagree
