"""The declared bodies of ``shardq.schema``, the OpenAPI document and the server agree: the
document's component schemas are the ones generated from the declarations, every field of a
declaration is in its schema, what the server answers decodes into the declared type, and the
strict reader refuses what the API always refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from shardq import JobError, JobService
from shardq.http import create_app
from shardq.http.openapi import build_spec
from shardq.schema import (
    BODIES,
    BadJson,
    BatchSubmitted,
    DeadLetter,
    DeadLetterPage,
    Error,
    Health,
    Job,
    JobPage,
    ReplayMany,
    Runners,
    Stats,
    Submitted,
    components,
    decode_json,
)

from .test_api import AUTH, TOKEN

SPEC = build_spec()


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if "$ref" in value else []
        return own + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def test_the_document_s_schemas_are_generated_from_the_declarations() -> None:
    assert SPEC["components"]["schemas"] == components()
    names = set(SPEC["components"]["schemas"])
    assert {t.__name__ for t in BODIES} <= names
    for ref in _refs(SPEC):
        assert ref.removeprefix("#/components/schemas/") in names, ref


@pytest.mark.parametrize("kind", BODIES, ids=lambda t: t.__name__)
def test_every_declared_field_is_in_its_schema(kind: type[msgspec.Struct]) -> None:
    schema = SPEC["components"]["schemas"][kind.__name__]
    fields = msgspec.structs.fields(kind)
    assert set(schema["properties"]) == {f.encode_name for f in fields}
    assert set(schema.get("required", [])) == {f.encode_name for f in fields if f.required}
    assert schema["additionalProperties"] is False


def test_submit_bodies_are_referenced_not_restated() -> None:
    paths = SPEC["paths"]
    one = paths["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    batch = paths["/api/jobs/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert one == {"$ref": "#/components/schemas/SubmitRequest"}
    assert batch["schema"] == {"$ref": "#/components/schemas/BatchRequest"}


@pytest.fixture
async def client(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    jobs = JobService(sqlite_url)

    @jobs.handler("echo")
    async def echo(p: Any) -> Any:
        return p

    @jobs.handler("boom")
    async def boom(p: Any) -> None:
        raise JobError.from_validation(None, "refused")

    async with jobs:
        app = create_app(jobs, TOKEN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=AUTH
        ) as c:
            c.jobs = jobs  # type: ignore[attr-defined]
            yield c


def _as(kind: type[Any], r: httpx.Response) -> Any:
    # strict: the body must be exactly of the declared type (no unknown fields)
    return msgspec.json.decode(r.content, type=kind, strict=True)


async def test_what_the_server_answers_decodes_into_the_declared_types(
    client: httpx.AsyncClient,
) -> None:
    jobs: JobService = client.jobs  # type: ignore[attr-defined]
    one = _as(Submitted, await client.post("/api/jobs", json={"type": "echo", "payload": [1]}))
    batch = {"jobs": [{"type": "boom", "payload": {"i": i}, "max_attempts": 1} for i in range(2)]}
    many = _as(BatchSubmitted, await client.post("/api/jobs/batch", json=batch))
    for job_id in [one.id, *(j.id for j in many.jobs)]:
        await jobs.wait(job_id, timeout=10)
    job = _as(Job, await client.get(f"/api/jobs/{one.id}"))
    assert job.result == [1] and [h.status for h in job.history][-1] == "complete"
    assert len(_as(JobPage, await client.get("/api/jobs")).jobs) == 3
    dead = _as(DeadLetterPage, await client.get("/api/dead-letters")).dead_letters
    assert len(dead) == 2
    _as(DeadLetter, await client.get(f"/api/dead-letters/{dead[0].id}"))
    replayed = await client.post("/api/dead-letters/replay", json={"ids": [dead[0].id, "1"]})
    assert len(_as(ReplayMany, replayed).failed) == 1
    assert _as(Stats, await client.get("/api/stats", params={"series": "true"})).series is not None
    _as(Runners, await client.get("/api/runners"))
    assert _as(Health, await client.get("/healthz")).status == "ok"
    refused = await client.post("/api/jobs", json={"type": "echo"})
    assert refused.status_code == 400 and _as(Error, refused).error.reason == "Validation"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        # A colon spelled as an escape, beside a repeated key: the colons still tell.
        (b'{"x\\u003a": 1, "a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"x\\u003A": {"b": [1, {"c": 1, "c": 1}]}}', "duplicate key 'c'"),
        (b'{"a": {"b": 1, "b": 1}, "s": "::"}', "duplicate key 'b'"),
        (b'["\\ud800"]', "lone UTF-16 surrogate"),
        (b'{"\\udc00": 1}', "lone UTF-16 surrogate"),
        (b'"\\ude00\\ud83d"', "lone UTF-16 surrogate"),
        (b'"\xed\xa0\x80"', "not UTF-8"),
        (b"[NaN]", "NaN is not JSON"),
        (b"-Infinity", "-Infinity is not JSON"),
        (b"1e400", "out of range"),
        (b"9" * 5000, "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"{} x", "not valid JSON"),
    ],
)
def test_the_strict_reader_refuses(raw: bytes, needle: str) -> None:
    with pytest.raises(BadJson) as info:
        decode_json(raw)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        {"x\u003a": 1, "y:": "a:b", ":": {":": [":"]}},
        {"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]},
        ["\U0001f600", "\u00e9", "\x00", 10**400, -1.5e308, 5e-324],
    ],
)
def test_the_strict_reader_reads_what_is_valid(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
        assert decode_json(text.encode("utf-8")) == value
