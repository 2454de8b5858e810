"""Property tests of the HTTP API: whatever a client sends (any Unicode, lone surrogates
included, huge and deep values, wrong types, raw bytes), every answer is 2xx or 4xx with a
JSON body, and afterwards every stored job reads back through the API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardq import JobService
from shardq.http import create_app

from .test_api import AUTH, TOKEN

T = TypeVar("T")
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Every code point, lone surrogates too (a JSON "\\ud800" escape decodes to one).
CHARS = st.characters(codec=None, categories=None)
TEXT = st.text(CHARS, max_size=20)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=1, max_value=400).map(lambda n: 10**n),
    st.floats(allow_nan=True, allow_infinity=True),
)
VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=16,
)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """A list or object nested up to 3,000 deep (a Python value, encoded by loop below)."""
    depth = draw(st.integers(min_value=1, max_value=3000))
    value: Any = draw(st.sampled_from([1, "x", None]))
    wrap = draw(st.sampled_from(["list", "dict"]))
    for _ in range(depth):
        value = [value] if wrap == "list" else {"a": value}
    return value


FIELD_VALUES = st.one_of(VALUES, deep(), st.sampled_from(["echo", "normal", "long", 3, 0.5]))
JOB_FIELDS = ["type", "payload", "priority", "key", "dedupe_key", "max_attempts", "timeout"]
JOBS = st.dictionaries(
    st.sampled_from([*JOB_FIELDS, "duration", "delay"]) | TEXT, FIELD_VALUES, max_size=6
).map(lambda d: {"type": "echo", "payload": {}, **d})


def dumps(value: Any) -> bytes:
    """JSON of any value: surrogates escaped, NaN as NaN, any depth (by a loop)."""
    from shardq.http.wire import _encode_by_loop

    try:
        return json.dumps(value, allow_nan=True).encode()
    except RecursionError:
        return _encode_by_loop(value).encode()


BODIES = st.one_of(
    JOBS.map(dumps),
    st.lists(JOBS, min_size=1, max_size=3).map(lambda jobs: dumps({"jobs": jobs})),
    st.binary(max_size=64),
    VALUES.map(dumps),
)
REQUESTS = st.tuples(
    st.sampled_from(
        ["/api/jobs", "/api/jobs/batch", "/api/dead-letters/replay", "/api/jobs/1/cancel"]
    ),
    BODIES,
)
QUERIES = st.tuples(
    st.sampled_from(["/api/jobs", "/api/dead-letters", "/api/stats"]),
    st.dictionaries(
        st.sampled_from(["status", "type", "key", "since", "until", "limit", "before"]) | TEXT,
        TEXT | NUMBERS.map(str),
        max_size=3,
    ),
)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture
def run(loop: asyncio.AbstractEventLoop) -> Callable[[Awaitable[T]], T]:
    def run(aw: Awaitable[T]) -> T:
        return loop.run_until_complete(aw)

    return run


@pytest.fixture
def api(tmp_path: Path, run: Callable[[Awaitable[Any]], Any]) -> Iterator[httpx.AsyncClient]:
    # The runner is off: the jobs stay queued and the test is about what the API stores.
    jobs = JobService(f"sqlite:///{tmp_path / 'jobs.db'}", runner=False)
    run(jobs.start())
    app = create_app(jobs, TOKEN, max_body=1 << 20)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=AUTH
    )
    yield client
    run(client.aclose())
    run(app.state.feed.close())  # type: ignore[attr-defined]
    run(jobs.stop())


def _json_error(r: httpx.Response) -> None:
    assert 200 <= r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"error"} and body["error"]["message"], body


async def _all_readable(c: httpx.AsyncClient) -> None:
    page = await c.get("/api/jobs", params={"limit": 1000})
    assert page.status_code == 200, page.text[:300]
    for job in page.json()["jobs"]:
        r = await c.get(f"/api/jobs/{job['id']}")
        assert r.status_code == 200, r.text[:300]
        assert r.json() == job
    for query in ({"status": "queued"}, {"type": "echo"}):
        assert (await c.get("/api/jobs", params=query)).status_code == 200
    assert (await c.get("/api/dead-letters")).status_code == 200
    assert (await c.get("/api/stats")).status_code == 200


def test_any_body_is_answered_and_what_is_stored_reads_back(
    api: httpx.AsyncClient, run: Callable[[Awaitable[Any]], Any]
) -> None:
    @SETTINGS
    @given(REQUESTS)
    def check(request: tuple[str, bytes]) -> None:
        path, body = request

        async def go() -> None:
            r = await api.post(path, content=body, headers={"Content-Type": "application/json"})
            _json_error(r)
            if r.status_code in (200, 201) and path == "/api/jobs":
                got = await api.get(f"/api/jobs/{r.json()['id']}")
                assert got.status_code == 200, got.text[:300]
                assert got.json()["payload"] == json.loads(body)["payload"]

        run(go())

    check()
    run(_all_readable(api))


def test_any_query_is_answered(
    api: httpx.AsyncClient, run: Callable[[Awaitable[Any]], Any]
) -> None:
    @SETTINGS
    @given(QUERIES, st.sampled_from(["", "123", "abc", "\ud800", "9" * 30]))
    def check(query: tuple[str, dict[str, str]], job_id: str) -> None:
        path, params = query

        async def go() -> None:
            # Sent as the raw UTF-8 bytes a client may put in a URL (surrogates too).
            raw = {
                k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass")
                for k, v in params.items()
            }
            _json_error(await api.get(f"{path}?{urlencode(raw)}"))
            jid = quote(job_id.encode("utf-8", "surrogatepass"), safe="")
            _json_error(await api.get(f"/api/jobs/{jid}"))
            _json_error(await api.get(f"/api/dead-letters/{jid}"))

        run(go())

    check()
