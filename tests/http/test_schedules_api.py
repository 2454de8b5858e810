"""The schedule and pause endpoints over HTTP, on real SQLite and PostgreSQL: what they store,
what they refuse (changing nothing), who may call them, and that /openapi.json says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema_rs
import msgspec
import pytest

from shardq import JobService
from shardq.http import create_app
from shardq.http.openapi import build_spec
from shardq.schema import Error, Paused, Schedule, SchedulePaused, Schedules

from .test_api import AUTH, TOKEN

SPEC = build_spec()
DAILY = {"name": "report.daily", "job_type": "report.build", "cron": "0 6 * * *"}


@pytest.fixture
async def jobs(database_url: str) -> AsyncIterator[JobService]:
    svc = JobService(database_url)

    @svc.handler("echo")
    async def echo(p: Any) -> Any:
        return p

    async with svc:
        yield svc


@pytest.fixture
async def client(jobs: JobService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(jobs, TOKEN))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", headers=AUTH
    ) as c:
        yield c


def _as(kind: type[Any], r: httpx.Response) -> Any:
    # strict: the body must be exactly of the declared type (no unknown fields)
    return msgspec.json.decode(r.content, type=kind, strict=True)


async def _listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/api/schedules")
    assert r.status_code == 200
    _as(Schedules, r)
    schedules: list[dict[str, Any]] = r.json()["schedules"]
    return schedules


async def test_add_change_list_and_remove(client: httpx.AsyncClient, jobs: JobService) -> None:
    r = await client.post(
        "/api/schedules",
        json={**DAILY, "tz": "Europe/Berlin", "payload": {"kind": "daily"}, "misfire": "all"},
    )
    assert r.status_code == 200, r.text
    added = _as(Schedule, r)
    assert (added.cron, added.every, added.tz, added.misfire) == (
        "0 6 * * *",
        None,
        "Europe/Berlin",
        "all",
    )
    assert added.payload == {"kind": "daily"} and added.next_tick is not None
    assert [s["name"] for s in await _listed(client)] == ["report.daily"]

    # The same name again changes it: now every 30 s, the other fields back to defaults.
    r = await client.post(
        "/api/schedules", json={"name": "report.daily", "job_type": "echo", "every": 30}
    )
    changed = _as(Schedule, r)
    assert (changed.cron, changed.every, changed.job_type, changed.tz) == (
        None,
        30.0,
        "echo",
        "UTC",
    )
    [stored] = await jobs.schedules()
    assert stored.to_dict() == r.json()

    r = await client.delete("/api/schedules/report.daily")
    assert r.status_code == 204 and r.content == b""
    assert await jobs.schedules() == []
    r = await client.delete("/api/schedules/report.daily")
    assert r.status_code == 404 and _as(Error, r).error.reason == "NotFound"
    assert "report.daily" in r.json()["error"]["message"]


async def test_a_schedule_added_over_http_fires(
    client: httpx.AsyncClient, jobs: JobService
) -> None:
    fired: asyncio.Queue[str] = asyncio.Queue()
    jobs.add_listener(lambda job_id, status: status == "complete" and fired.put_nowait(job_id))
    r = await client.post(
        "/api/schedules",
        json={"name": "fast", "job_type": "echo", "every": 0.05, "payload": {"n": 1}},
    )
    assert r.status_code == 200
    async with asyncio.timeout(15):
        job_id = await fired.get()
    st = await jobs.status(job_id)
    assert st.schedule == "fast" and st.result == {"n": 1}
    [s] = await _listed(client)
    assert s["last_tick"] is not None and s["last_job_id"] is not None


BAD_BODIES: list[tuple[dict[str, Any] | bytes, str]] = [
    ({**DAILY, "cron": "61 * * * *"}, "invalid cron expression"),
    ({**DAILY, "cron": "not cron"}, "invalid cron expression"),
    ({**DAILY, "tz": "Mars/Olympus_Mons"}, "unknown time zone"),
    ({"name": "n", "job_type": "echo", "every": 0}, "every must be more than 0"),
    ({"name": "n", "job_type": "echo", "every": -5}, "every must be more than 0"),
    ({"name": "n", "job_type": "echo", "every": 0.0001}, "at least 0.001 seconds"),
    ({**DAILY, "every": 5}, "not both"),
    ({"name": "n", "job_type": "echo"}, "give a schedule cron="),
    ({**DAILY, "misfire": "sometimes"}, "'misfire' may not be"),
    ({**DAILY, "overlap": 1}, "'overlap'"),
    ({**DAILY, "priority": "urgent"}, "'priority' may not be"),
    ({**DAILY, "name": " "}, "schedule name must be a non-empty string"),
    ({**DAILY, "job_type": None}, "'job_type' must be str"),
    ({**DAILY, "every": True}, "'every' must be"),
    ({**DAILY, "cron": None}, "'cron' must be str"),
    ({**DAILY, "colour": "red"}, "unknown field 'colour'"),
    ({**DAILY, "key": ""}, "key must be a non-empty string"),
    (b'{"name": "n", "job_type": "echo", "every": 1, "payload": {"n": Infinity}}', "Infinity"),
    (b'{"name": "n", "name": "m", "job_type": "echo", "every": 1}', "duplicate key 'name'"),
]


async def test_bad_schedules_are_refused_and_change_nothing(
    client: httpx.AsyncClient, jobs: JobService
) -> None:
    await client.post("/api/schedules", json={"name": "n", "job_type": "echo", "every": 60})
    before = await _listed(client)
    for body, needle in BAD_BODIES:
        raw = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
        r = await client.post(
            "/api/schedules", content=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, (body, r.text)
        error = _as(Error, r).error
        assert error.reason == "Validation" and needle in error.message, (body, error.message)
    assert await _listed(client) == before


async def test_names_with_slashes_spaces_and_unknown_names(client: httpx.AsyncClient) -> None:
    name = "team a/daily report"
    r = await client.post("/api/schedules", json={"name": name, "job_type": "echo", "every": 60})
    assert r.status_code == 200
    path = "/api/schedules/" + name.replace("/", "%2F").replace(" ", "%20")
    r = await client.post(path + "/pause")
    assert _as(SchedulePaused, r) == SchedulePaused(name=name, paused=True)
    assert [s["paused"] for s in await _listed(client)] == [True]
    r = await client.post(path + "/resume", json={})
    assert r.status_code == 200 and r.json() == {"name": name, "paused": False}
    assert [s["paused"] for s in await _listed(client)] == [False]
    r = await client.post(path + "/pause", json={"now": True})
    assert r.status_code == 400 and [s["paused"] for s in await _listed(client)] == [False]

    for missing in ("nope", "%20", "x" * 256, "a%00b"):
        for method, suffix in (("POST", "/pause"), ("POST", "/resume"), ("DELETE", "")):
            r = await client.request(method, f"/api/schedules/{missing}{suffix}")
            assert r.status_code == 404, (method, missing, r.text)
            assert r.json()["error"]["reason"] == "NotFound"
    r = await client.delete(path)
    assert r.status_code == 204 and await _listed(client) == []


async def test_pause_and_resume_a_job_type_and_a_key(
    client: httpx.AsyncClient, jobs: JobService
) -> None:
    r = await client.get("/api/paused")
    assert _as(Paused, r) == Paused(job_types=[], keys=[], schedules=[])
    r = await client.post("/api/pause", json={"job_type": "email.send"})
    assert _as(Paused, r) == Paused(job_types=["email.send"], keys=[], schedules=[])
    r = await client.post("/api/pause", json={"key": "account:42"})
    assert r.json() == {"job_types": ["email.send"], "keys": ["account:42"], "schedules": []}
    paused = await jobs.paused()
    assert (paused.job_types, paused.keys) == (["email.send"], ["account:42"])

    for body in (
        {},
        {"job_type": "a", "key": "b"},
        {"job_type": ""},
        {"key": " "},
        {"key": None},
        {"schedule": "s"},
    ):
        for action in ("pause", "resume"):
            r = await client.post(f"/api/{action}", json=body)
            assert r.status_code == 400, (action, body, r.text)
            assert _as(Error, r).error.reason == "Validation"
    r = await client.post("/api/pause", content=b"", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert (await client.get("/api/paused")).json()["keys"] == ["account:42"]

    r = await client.post("/api/resume", json={"job_type": "email.send"})
    assert r.json() == {"job_types": [], "keys": ["account:42"], "schedules": []}
    r = await client.post("/api/resume", json={"key": "account:42"})
    assert r.json() == {"job_types": [], "keys": [], "schedules": []}


async def test_reads_need_the_token_and_writes_a_write_token(jobs: JobService) -> None:
    reads = [("GET", "/api/schedules"), ("GET", "/api/paused")]
    writes = [
        ("POST", "/api/schedules", DAILY),
        ("DELETE", "/api/schedules/report.daily", None),
        ("POST", "/api/schedules/report.daily/pause", None),
        ("POST", "/api/schedules/report.daily/resume", None),
        ("POST", "/api/pause", {"job_type": "echo"}),
        ("POST", "/api/resume", {"job_type": "echo"}),
    ]
    await jobs.schedule("report.daily", job_type="report.build", cron="0 6 * * *")
    for token in (TOKEN, None):
        transport = httpx.ASGITransport(app=create_app(jobs, token))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            for method, path in reads:
                r = await c.request(method, path)
                assert r.status_code == (401 if token else 200), (token, path)
            for method, path, body in writes:
                r = await c.request(method, path, json=body)
                assert r.status_code == 401, (token, method, path)
                assert r.json()["error"]["reason"] == "Unauthorized"
    [s] = await jobs.schedules()
    assert not s.paused and (await jobs.paused()).job_types == []


def test_every_endpoint_is_in_the_document() -> None:
    paths = SPEC["paths"]
    assert set(paths["/api/schedules"]) == {"get", "post"}
    assert set(paths["/api/schedules/{name}"]) == {"delete"}
    for path in ("/api/schedules/{name}/pause", "/api/schedules/{name}/resume"):
        assert paths[path]["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/SchedulePaused"
        }
    for path in ("/api/pause", "/api/resume"):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["allOf"][0] == {"$ref": "#/components/schemas/PauseRequest"}
    assert set(paths["/api/paused"]) == {"get"}


def _body_validator(path: str) -> Any:
    schema = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for({**schema, "components": SPEC["components"]})


SPEC_CASES: list[tuple[str, dict[str, Any]]] = [
    ("/api/schedules", {"name": "n", "job_type": "echo", "every": 60}),
    ("/api/schedules", {"name": "n", "job_type": "echo", "every": 0}),
    ("/api/schedules", {"name": "n", "job_type": "echo", "every": 0.0004}),
    ("/api/schedules", {"name": "n", "job_type": "echo", "every": 315360001}),
    ("/api/schedules", {"name": "n", "job_type": "echo", "cron": "* * * * *", "every": 1}),
    ("/api/schedules", {"name": "n", "job_type": "echo"}),
    ("/api/schedules", {"name": "", "job_type": "echo", "every": 1}),
    ("/api/schedules", {"name": "n" * 256, "job_type": "echo", "every": 1}),
    ("/api/schedules", {"name": "n", "job_type": "echo", "every": 1, "misfire": "all"}),
    ("/api/schedules", {"name": "n", "job_type": "echo", "every": 1, "overlap": "never"}),
    ("/api/schedules", {"name": "n", "job_type": "echo", "every": 1, "key": "\u3000"}),
    ("/api/pause", {"job_type": "echo"}),
    ("/api/pause", {"key": "k"}),
    ("/api/pause", {}),
    ("/api/pause", {"job_type": "echo", "key": "k"}),
    ("/api/pause", {"job_type": "\t"}),
    ("/api/resume", {"key": "k" * 255}),
    ("/api/resume", {"key": "k" * 256}),
]


async def test_the_document_and_the_server_agree_on_bodies(client: httpx.AsyncClient) -> None:
    disagree = []
    for path, body in SPEC_CASES:
        r = await client.post(path, json=body)
        assert r.status_code in (200, 400), r.text
        if _body_validator(path).is_valid(body) != (r.status_code == 200):
            disagree.append((path, body, r.status_code, r.text[:160]))
    assert not disagree
