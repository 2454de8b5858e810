"""schemathesis against the served OpenAPI spec: no server error, every response as specified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from shardq import JobError, JobService, RetryPolicy

from .server import LiveServer

TOKEN = "schema-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    db: Path = tmp_path_factory.mktemp("schema") / "jobs.db"

    def make() -> JobService:
        jobs = JobService(f"sqlite:///{db}", concurrency=8, retry=RetryPolicy(base=0.01, cap=0.05))

        @jobs.handler("echo")
        async def echo(p: Any) -> Any:
            return p

        @jobs.handler("boom")
        async def boom(p: Any) -> None:
            raise JobError.from_validation(None, "refused")

        return jobs

    live = LiveServer(make, TOKEN).start()

    async def seed(jobs: JobService) -> None:
        # Something to find: finished jobs, a queued one and dead letters.
        done = await jobs.submit("echo", [{"i": i} for i in range(3)])
        failed = await jobs.submit("boom", [{"i": i} for i in range(3)])
        await jobs.submit("echo", {"later": True}, delay=3600)
        for j in [*done, *failed]:
            await jobs.wait(j, timeout=10)

    live.call(seed)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def api_schema(server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json").exclude(
        path="/api/events"  # an endless stream
    )


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _operations(api_schema: Any) -> list[Any]:
    return [result.ok() for result in api_schema.get_all_operations()]


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_matches_its_spec(api_schema: Any, server: LiveServer, mode: GenerationMode) -> None:
    """Every operation, with valid (and then invalid) generated input: never a 5xx, and
    every status, content type and body is the one the spec states."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    operations = _operations(api_schema)
    assert len(operations) == 23  # all but the endless event stream
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def check(case: Any) -> None:
            case.call_and_validate(base_url=server.url, headers=headers, timeout=30, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:
            # Nothing to get wrong: the operation takes no parameters and no body.
            assert mode is GenerationMode.NEGATIVE, operation.label


def test_writes_without_token_are_refused(server: LiveServer) -> None:
    r = httpx.post(f"{server.url}/api/jobs", json={"type": "echo", "payload": {}})
    assert r.status_code == 401
    assert r.json()["error"]["reason"] == "Unauthorized"
