"""``/openapi.json`` and the server agree on what is valid: the document's schema (checked by
a JSON Schema validator, formats included) accepts an input exactly when the server does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema_rs
import pytest

from shardq import JobService
from shardq.http import create_app
from shardq.http.openapi import build_spec

from .test_api import AUTH, TOKEN

SPEC = build_spec()
MAX_S = 10 * 365 * 86_400
BASE = {"type": "echo", "payload": {}, "delay": 3600}

BODY_CASES: list[tuple[str, Any]] = [
    ("max_attempts", 1000.0),
    ("max_attempts", 1e3),
    ("max_attempts", 1000.5),
    ("max_attempts", 1001),
    ("max_attempts", 1),
    ("max_attempts", 0),
    ("max_attempts", "3"),
    ("max_attempts", True),
    ("key", ""),
    ("key", " "),
    ("key", "\x1c\u3000"),
    ("key", "\ufeff"),
    ("key", " k "),
    ("key", "k" * 255),
    ("key", "k" * 256),
    ("key", None),
    ("key", 5),
    ("dedupe_key", ""),
    ("dedupe_key", "\t"),
    ("dedupe_key", "d"),
    ("dedupe_key", ["d"]),
    ("type", ""),
    ("type", "\u2028"),
    ("type", "t" * 255),
    ("type", "t" * 256),
    ("type", None),
    ("timeout", 0),
    ("timeout", 0.001),
    ("timeout", MAX_S),
    ("timeout", MAX_S + 0.5),
    ("timeout", None),
    ("delay", -1),
    ("delay", 0),
    ("delay", MAX_S),
    ("delay", MAX_S + 1),
    ("delay", None),
    ("priority", "urgent"),
    ("priority", "critical"),
    ("duration", "long"),
    ("duration", "forever"),
]

TIME_CASES = [
    "1700000000",
    "1700000000.25",
    "99999999999",
    "100000000000",
    "1e9",
    "-1",
    " 1700000000",
    "1_700_000_000",
    "nan",
    "",
    "2024-01-01T00:00:00Z",
    "2024-01-01t00:00:00z",
    "2024-01-01T00:00:00.123456+05:30",
    "2024-01-01T00:00:00-00:00",
    "2024-01-01T00:00:00",
    "2024-01-01 00:00:00Z",
    "2024-01-01",
    "2024-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "1900-02-29T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-12-31T23:59:60Z",
    "2024-06-30T12:00:60Z",
    "2024-01-01T00:00:00+24:00",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999+23:59",
    "\uff12\uff10\uff12\uff14-01-01T00:00:00Z",
    "yesterday",
]


def _validator(schema: dict[str, Any]) -> Any:
    # Refs point at #/components/...: resolve them against the document.
    return jsonschema_rs.validator_for(
        {**schema, "components": SPEC["components"]}, validate_formats=True
    )


def _param_schema(path: str, name: str) -> dict[str, Any]:
    [param] = [p for p in SPEC["paths"][path]["get"]["parameters"] if p["name"] == name]
    schema: dict[str, Any] = param["schema"]
    return schema


@pytest.fixture
async def client(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with JobService(sqlite_url) as jobs:
        app = create_app(jobs, TOKEN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=AUTH
        ) as c:
            yield c


async def test_submit_bodies(client: httpx.AsyncClient) -> None:
    one = _validator(
        SPEC["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )
    batch = _validator(
        SPEC["paths"]["/api/jobs/batch"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]
    )
    disagree = []
    for field, value in BODY_CASES:
        body = {**BASE, field: value}
        r = await client.post("/api/jobs", json=body)
        assert r.status_code in (200, 201, 400), r.text
        if one.is_valid(body) != (r.status_code != 400):
            disagree.append(("submit", field, value, r.status_code, r.text[:120]))
        job = {k: v for k, v in body.items() if k != "delay"}
        if field == "delay":
            batch_body = {"jobs": [job], "delay": value}
        else:
            batch_body = {"jobs": [job], "delay": 3600}
        r = await client.post("/api/jobs/batch", json=batch_body)
        assert r.status_code in (201, 400), r.text
        if batch.is_valid(batch_body) != (r.status_code == 201):
            disagree.append(("batch", field, value, r.status_code, r.text[:120]))
    assert not disagree


@pytest.mark.parametrize("name", ["since", "until"])
async def test_list_times(client: httpx.AsyncClient, name: str) -> None:
    schema = _validator(_param_schema("/api/jobs", name))
    disagree = []
    for value in TIME_CASES:
        r = await client.get("/api/jobs", params={name: value})
        assert r.status_code in (200, 400), r.text
        if schema.is_valid(value) != (r.status_code == 200):
            disagree.append((value, r.status_code, r.text[:120]))
    assert not disagree


async def test_other_query_parameters(client: httpx.AsyncClient) -> None:
    cases = [
        ("/api/jobs", "key", ["", "k", " ", "\u3000"]),
        ("/api/jobs", "type", ["", "echo"]),
        ("/api/jobs", "status", ["", "queued", "done"]),
        ("/api/jobs", "priority", ["", "low", "urgent"]),
        ("/api/jobs", "before", ["", "1", "9999999999999999999", "99999999999999999999", "x"]),
        ("/api/dead-letters", "before", ["", "12", "9223372036854775808"]),
        ("/api/stats", "series", ["", "true", "false", "1", "0", "yes"]),
    ]
    disagree = []
    for path, name, values in cases:
        schema = _validator(_param_schema(path, name))
        for value in values:
            r = await client.get(path, params={name: value})
            assert r.status_code in (200, 400), r.text
            if schema.is_valid(value) != (r.status_code == 200):
                disagree.append((path, name, value, r.status_code, json.loads(r.text)))
    assert not disagree
