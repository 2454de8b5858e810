"""Who may read what, which host names are served, the security headers, and hostile bodies."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from shardq import JobService
from shardq.http import create_app
from shardq.http.security import API_CSP, DASHBOARD_CSP
from shardq.http.wire import encode

from .server import LiveServer
from .test_api import AUTH, TOKEN, assert_error, snapshot

METRICS_TOKEN = "metrics-only"

READS = [
    "/api/jobs",
    "/api/jobs/123",
    "/api/dead-letters",
    "/api/dead-letters/123",
    "/api/stats",
    "/api/stats?series=true",
    "/api/runners",
    "/api/events",
    "/metrics",
]
OPEN = ["/healthz", "/", "/static/app.js", "/static/chart.js", "/static/style.css", "/openapi.json"]


@pytest.fixture
async def jobs(sqlite_url: str) -> AsyncIterator[JobService]:
    svc = JobService(sqlite_url, concurrency=4)

    @svc.handler("echo")
    async def echo(p: Any) -> Any:
        return p

    async with svc:
        yield svc


@pytest.fixture
def app(jobs: JobService) -> Iterator[ASGIApp]:
    yield create_app(jobs, TOKEN, max_body=1 << 20, metrics_token=METRICS_TOKEN)


def client_of(app: ASGIApp, host: str = "127.0.0.1:8000", **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"http://{host}", **kw
    )


@pytest.fixture
async def anon(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app) as c:
        yield c


@pytest.fixture
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app, headers=AUTH) as c:
        yield c


# -- the token -------------------------------------------------------------------------------


async def test_every_read_needs_the_token(anon: httpx.AsyncClient, jobs: JobService) -> None:
    job_id = await jobs.submit("echo", {"secret": "payload"})
    await jobs.wait(job_id, timeout=10)
    reads = [*READS, f"/api/jobs/{job_id}"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for path in reads:
            r = await anon.get(path, headers=headers)
            assert_error(r, 401, "Unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "secret" not in r.text
    r = await anon.get(f"/api/jobs/{job_id}", headers=AUTH)
    assert r.status_code == 200 and r.json()["payload"] == {"secret": "payload"}
    for path in OPEN:
        assert (await anon.get(path)).status_code == 200, path


async def test_metrics_take_either_token_and_the_metrics_token_reads_nothing_else(
    anon: httpx.AsyncClient,
) -> None:
    for token in (TOKEN, METRICS_TOKEN):
        r = await anon.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "shardq_" in r.text
    for path in READS[:-1]:
        r = await anon.get(path, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert_error(r, 401, "Unauthorized")


async def test_without_an_api_token_only_the_metrics_token_is_asked(jobs: JobService) -> None:
    async with client_of(create_app(jobs, None, metrics_token=METRICS_TOKEN)) as c:
        assert (await c.get("/api/jobs")).status_code == 200  # reads open, writes refused
        assert_error(await c.get("/metrics"), 401, "Unauthorized")
        r = await c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert r.status_code == 200


# -- host names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:8000", "localhost:8000", "LocalHost", "[::1]:9000", "[::1]"]
)
async def test_loopback_names_are_served(app: ASGIApp, host: str) -> None:
    async with client_of(app, host, headers=AUTH) as c:
        assert (await c.get("/api/jobs")).status_code == 200


@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:8000", "127.0.0.1.nip.io", "localhost.evil"]
)
async def test_other_host_names_are_refused(app: ASGIApp, host: str) -> None:
    """A DNS-rebinding page reaches the loopback server under its own name: refused."""
    async with client_of(app, host, headers=AUTH) as c:
        for path in ["/", "/static/app.js", "/openapi.json", *READS]:
            r = await c.get(path)
            assert_error(r, 400, "BadHost")
            assert host.split(":", maxsplit=1)[0] in r.json()["error"]["message"]
            assert "--allowed-host" in r.json()["error"]["message"]
            assert r.headers["x-content-type-options"] == "nosniff"
        r = await c.post("/api/jobs", json={"type": "echo", "payload": 1})
        assert_error(r, 400, "BadHost")
        # Load balancers probe by address: health answers any host.
        assert (await c.get("/healthz")).status_code == 200


async def test_configured_host_names(jobs: JobService) -> None:
    app = create_app(jobs, TOKEN, allowed_hosts=["Jobs.Example.com", "::1", "10.0.0.5"])
    for host, ok in [
        ("jobs.example.com", True),
        ("jobs.example.com.:443", True),
        ("[::1]:80", True),
        ("10.0.0.5:8000", True),
        ("127.0.0.1", False),  # the configured list replaces the default one
        ("other.example.com", False),
    ]:
        async with client_of(app, host, headers=AUTH) as c:
            assert ((await c.get("/api/jobs")).status_code == 200) is ok, host
    async with client_of(create_app(jobs, TOKEN, allowed_hosts=["*"]), "any.where") as c:
        assert (await c.get("/api/jobs", headers=AUTH)).status_code == 200
    for bad in ([], "localhost", ["http://x"], ["a b"], ["host:80"]):
        with pytest.raises(ValueError):
            create_app(jobs, TOKEN, allowed_hosts=bad)


# -- headers ---------------------------------------------------------------------------------


async def test_security_headers(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    responses = [
        await client.get("/api/jobs"),
        await client.get("/api/jobs/123"),  # 404
        await anon.get("/api/jobs"),  # 401
        await client.get("/api/jobs?limit=0"),  # 400
        await client.post("/api/jobs", json={"type": "echo", "payload": 1}),
        await client.get("/metrics"),
        await client.get("/healthz"),
        await client.get("/openapi.json"),
        await client.get("/nowhere"),
    ]
    for r in responses:
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["referrer-policy"] == "no-referrer", r.url
        assert r.headers["content-security-policy"] == API_CSP, r.url
    for path in ("/", "/static/app.js", "/static/style.css"):
        r = await anon.get(path)
        assert r.headers["content-security-policy"] == DASHBOARD_CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"


# -- hostile bodies ----------------------------------------------------------------------------

DEEP = "[" * 2000 + "]" * 2000
BIG = "1" + "0" * 399
HOSTILE = {
    "duplicate key": '{"type": "echo", "payload": 1, "payload": 2}',
    "duplicate nested key": '{"type": "echo", "payload": {"a": 1, "a": 2}}',
    "surrogate type": '{"type": "e\\ud800", "payload": 1}',
    "surrogate key": '{"type": "echo", "payload": 1, "key": "\\udc00"}',
    "surrogate dedupe_key": '{"type": "echo", "payload": 1, "dedupe_key": "x\\udbff"}',
    "surrogate payload": '{"type": "echo", "payload": {"name": "bad \\ud800"}}',
    "surrogate payload key": '{"type": "echo", "payload": {"\\ud800": 1}}',
    "reversed pair": '{"type": "echo", "payload": "\\ude00\\ud83d"}',
    "surrogate as UTF-8 bytes": b'{"type": "echo", "payload": "\xed\xa0\x80"}',
    "not UTF-8": b'{"type": "echo", "payload": "\xff"}',
    "huge delay": f'{{"type": "echo", "payload": 1, "delay": {BIG}}}',
    "huge timeout": f'{{"type": "echo", "payload": 1, "timeout": {BIG}}}',
    "huge max_attempts": f'{{"type": "echo", "payload": 1, "max_attempts": {BIG}}}',
    "huge float max_attempts": '{"type": "echo", "payload": 1, "max_attempts": 1e300}',
    "fractional max_attempts": '{"type": "echo", "payload": 1, "max_attempts": 2.5}',
    "negative huge delay": f'{{"type": "echo", "payload": 1, "delay": -{BIG}}}',
    "deep list": f'{{"type": "echo", "payload": {DEEP}}}',
    "deep object": '{"type": "echo", "payload": ' + '{"a":' * 2000 + "1" + "}" * 2001,
    "NaN": '{"type": "echo", "payload": NaN}',
    "Infinity": '{"type": "echo", "payload": [Infinity]}',
    "-Infinity": '{"type": "echo", "payload": 1, "delay": -Infinity}',
    "overflowing float": '{"type": "echo", "payload": 1e400}',
    "overflowing delay": '{"type": "echo", "payload": 1, "delay": 1e400}',
    "numeric dedupe_key": '{"type": "echo", "payload": 1, "dedupe_key": 5}',
    "list dedupe_key": '{"type": "echo", "payload": 1, "dedupe_key": ["a"]}',
    "bool dedupe_key": '{"type": "echo", "payload": 1, "dedupe_key": true}',
    "empty key": '{"type": "echo", "payload": 1, "key": ""}',
    "blank type": '{"type": " \\t\\u3000", "payload": 1}',
    "long type": '{"type": "' + "t" * 256 + '", "payload": 1}',
}


@pytest.mark.parametrize("raw", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_hostile_submits_are_refused_and_store_nothing(
    client: httpx.AsyncClient, jobs: JobService, raw: str | bytes
) -> None:
    body = raw.encode() if isinstance(raw, str) else raw
    before = await snapshot(jobs)
    headers = {"Content-Type": "application/json"}
    assert_error(await client.post("/api/jobs", content=body, headers=headers), 400, "Validation")
    # The same job inside a batch, next to a valid one: the whole batch is refused.
    text = body.decode("utf-8", "surrogateescape")
    batch = f'{{"jobs": [{{"type": "echo", "payload": 0}}, {text}]}}'.encode(
        "utf-8", "surrogateescape"
    )
    r = await client.post("/api/jobs/batch", content=batch, headers=headers)
    assert_error(r, 400, "Validation")
    assert await snapshot(jobs) == before


async def test_valid_edge_values_are_accepted(client: httpx.AsyncClient, jobs: JobService) -> None:
    for raw in [
        '{"type": "echo", "payload": "\\ud83d\\ude00 \\u0000", "max_attempts": 1000.0}',
        f'{{"type": "echo", "payload": {BIG}}}',
        '{"type": "echo", "payload": 1, "delay": 0.0, "timeout": 1e-300}',
        '{"type": "echo", "payload": 1, "key": "' + "k" * 255 + '"}',
    ]:
        r = await client.post(
            "/api/jobs", content=raw.encode(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 201, (raw[:80], r.text)
        job = (await client.get(f"/api/jobs/{r.json()['id']}")).json()
        assert job["payload"] == json.loads(raw)["payload"]


async def test_reads_encode_whatever_is_stored(
    client: httpx.AsyncClient, jobs: JobService, sqlite_url: str
) -> None:
    """Strings stored before they were refused (a lone surrogate) are still readable."""
    job_id = await jobs.submit("echo", {"name": "x"}, delay=3600)
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE jobs SET payload = ?, result = ? WHERE id = ?",
            ('{"name": "bad \\ud800", "\\udc00": [1e308]}', '"\\udfff"', int(job_id)),
        )
    r = await client.get(f"/api/jobs/{job_id}")
    assert r.status_code == 200, r.text
    assert r.json()["payload"] == {"name": "bad \ud800", "\udc00": [1e308]}
    assert r.json()["result"] == "\udfff"
    r = await client.get("/api/jobs")
    assert r.status_code == 200 and r.json()["jobs"][0]["id"] == job_id


def test_the_response_encoder_takes_any_value() -> None:
    deep: list[Any] = []
    cur = deep
    for _ in range(50_000):
        cur.append([])
        cur = cur[0]
    assert encode(deep) == b"[" * 50_001 + b"]" * 50_001
    value = {"s": "\ud800é\U0001f600", "n": [1, 2.5, None, True, float("nan")], "t": (1, "x")}
    assert encode(value) == json.dumps(
        {**value, "n": [1, 2.5, None, True, None], "t": [1, "x"]}, separators=(",", ":")
    ).encode("ascii")
    base = {"a": [{"b": "\ud800"}] * 3, "c": {}}
    nested: Any = base
    for _ in range(3000):
        nested = {"k": [nested, "\udc00"]}
    inner = json.dumps(base, separators=(",", ":"))
    expected = '{"k":[' * 3000 + inner + ',"\\udc00"]}' * 3000
    assert encode(nested) == expected.encode("ascii")


# -- health --------------------------------------------------------------------------------------


async def test_healthz_reports_a_problem(
    app: ASGIApp, jobs: JobService, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client_of(app) as c:
        r = await c.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        monkeypatch.setattr(jobs, "health_problem", lambda: "runner steps keep failing")
        r = await c.get("/healthz")
        assert r.status_code == 503
        assert r.json() == {"status": "failing", "message": "runner steps keep failing"}
    stopped = JobService(sqlite_url)
    async with client_of(create_app(stopped, TOKEN)) as c:
        r = await c.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "failing"
        assert "not started" in r.json()["message"]


# -- abandoned uploads -----------------------------------------------------------------------------


class _Records(logging.Handler):
    """Every record at or above INFO, and an event set when ``wanted`` is logged."""

    def __init__(self, wanted: str) -> None:
        super().__init__(logging.INFO)
        self.wanted = wanted
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.wanted in record.getMessage():
            self.seen.set()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    db: Path = tmp_path_factory.mktemp("abandon") / "jobs.db"
    server = LiveServer(
        lambda: JobService(f"sqlite:///{db}"),
        TOKEN,
        metrics_token=METRICS_TOKEN,
        extra_hosts=["jobs.example.com"],
    ).start()
    yield server
    server.stop()


def test_serve_answers_its_names_and_takes_the_metrics_token(live: LiveServer) -> None:
    def get(path: str, host: str, token: str) -> httpx.Response:
        headers = {"Host": host, "Authorization": f"Bearer {token}"}
        return httpx.get(live.url + path, headers=headers, timeout=10)

    for host in ("jobs.example.com", f"localhost:{live.port}", f"127.0.0.1:{live.port}"):
        assert get("/api/jobs", host, TOKEN).status_code == 200, host
    assert_error(get("/api/jobs", "rebound.example", TOKEN), 400, "BadHost")
    assert get("/metrics", "jobs.example.com", METRICS_TOKEN).status_code == 200
    assert_error(get("/api/jobs", "jobs.example.com", METRICS_TOKEN), 401, "Unauthorized")


def test_the_names_serve_answers_to(monkeypatch: pytest.MonkeyPatch) -> None:
    from shardq.cli.serve import allowed_hosts

    monkeypatch.delenv("SHARDQ_ALLOWED_HOSTS", raising=False)
    assert allowed_hosts("127.0.0.1", []) == ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_hosts("0.0.0.0", []) == ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_hosts("::", ["Jobs.Example.com"])[-1] == "jobs.example.com"
    assert allowed_hosts("10.1.2.3", []) == ["127.0.0.1", "localhost", "[::1]", "10.1.2.3"]
    monkeypatch.setenv("SHARDQ_ALLOWED_HOSTS", "a.example, b.example,")
    assert allowed_hosts("::1", ["c.example"]) == [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "c.example",
        "a.example",
        "b.example",
    ]
    with pytest.raises(ValueError, match="allowed-host"):
        allowed_hosts("127.0.0.1", ["http://x.example/"])


def test_the_event_stream_needs_the_token(live: LiveServer) -> None:
    assert_error(httpx.get(f"{live.url}/api/events", timeout=10), 401, "Unauthorized")
    with httpx.stream("GET", f"{live.url}/api/events", headers=AUTH, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert next(r.iter_lines()) == "retry: 2000"


def test_an_abandoned_upload_is_not_an_error(live: LiveServer) -> None:
    records = _Records("client left")
    loggers = [logging.getLogger(n) for n in ("shardq", "uvicorn", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(records)
    logging.getLogger("shardq").setLevel(logging.INFO)
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
                s.sendall(
                    b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                    b'{"type": "echo", "payload": "' + b"x" * 5000
                )
            assert records.seen.wait(10), [r.getMessage() for r in records.records]
            records.seen.clear()
        r = httpx.get(f"{live.url}/api/jobs", headers=AUTH)  # the server goes on serving
        assert r.status_code == 200
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(records)
            lg.setLevel(level)
    assert not [r for r in records.records if r.levelno >= logging.WARNING or r.exc_info]
